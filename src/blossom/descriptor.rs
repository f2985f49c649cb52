//! Blob descriptors (BUD-02), read leniently: servers of every age add
//! fields, drop `type`, write numbers as strings or say `created` for
//! `uploaded`. Only `sha256` and `size` decide whether a copy is ours.

use serde::{Deserialize, Deserializer, Serialize};

use crate::blob::Sha256;

/// What a server says it stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobDescriptor {
    /// Where the server serves the blob.
    #[serde(default)]
    pub url: Option<String>,
    /// The hash the server computed, as it wrote it.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The size the server counted.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub size: Option<u64>,
    /// The MIME type the server recorded (may differ from what was sent).
    #[serde(default, rename = "type")]
    pub mime: Option<String>,
    /// Unix seconds when the server stored it.
    #[serde(default, alias = "created", deserialize_with = "lenient_u64")]
    pub uploaded: Option<u64>,
}

/// How a descriptor disagrees with the bytes we sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// The descriptor names other bytes.
    #[error("server reports sha256 {reported}, expected {expected}")]
    Hash {
        /// What the server wrote.
        reported: String,
        /// Our hash.
        expected: Sha256,
    },
    /// Same hash, different length.
    #[error("server reports size {reported}, expected {expected}")]
    Size {
        /// What the server wrote.
        reported: u64,
        /// Our size.
        expected: u64,
    },
    /// No hash at all: the copy cannot be confirmed from the descriptor.
    #[error("server's descriptor has no sha256")]
    MissingHash,
}

impl BlobDescriptor {
    /// Parses a descriptor body.
    ///
    /// # Errors
    ///
    /// When the body is not a JSON object.
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// Checks that the descriptor describes exactly our bytes: the hash
    /// (compared case-insensitively) and, when given, the size. Our own hash
    /// is the only truth; the server's is never adopted.
    ///
    /// # Errors
    ///
    /// The first disagreement.
    pub fn check(&self, expected: &Sha256, size: u64) -> Result<(), Mismatch> {
        let reported = self.sha256.as_deref().ok_or(Mismatch::MissingHash)?;
        if !reported.eq_ignore_ascii_case(&expected.to_hex()) {
            return Err(Mismatch::Hash { reported: reported.to_owned(), expected: *expected });
        }
        match self.size {
            Some(reported) if reported != size => Err(Mismatch::Size { reported, expected: size }),
            _ => Ok(()),
        }
    }
}

/// Accepts `12`, `"12"` and `null`; anything else reads as absent rather than
/// failing the whole descriptor, since only `sha256`/`size` checks matter and
/// a size that cannot be read is checked by `HEAD` instead.
fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_current_and_older_shapes() {
        let current = br#"{"url":"https://a/x.pdf","sha256":"ab","size":184292,"type":"application/pdf","uploaded":1725105921}"#;
        let d = BlobDescriptor::parse(current).unwrap();
        assert_eq!(d.size, Some(184292));
        assert_eq!(d.uploaded, Some(1725105921));
        assert_eq!(d.mime.as_deref(), Some("application/pdf"));

        let old = br#"{"url":"https://a/x","sha256":"ab","size":"12","created":"1700000000","nip94":{"x":"y"},"extra":[1]}"#;
        let d = BlobDescriptor::parse(old).unwrap();
        assert_eq!((d.size, d.uploaded, d.mime), (Some(12), Some(1700000000), None));

        let nip94_array = br#"{"sha256":"ab","size":1,"nip94":[["x","ab"],["size","1"]]}"#;
        assert!(BlobDescriptor::parse(nip94_array).is_ok());
    }

    #[test]
    fn refuses_bodies_that_are_not_objects() {
        for body in [&b"<html>413</html>"[..], b"", b"[1,2]", b"{\"sha256\":"] {
            assert!(BlobDescriptor::parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    /// Field case B10: only a descriptor naming exactly our bytes counts.
    #[test]
    fn b10_checks_hash_and_size_against_ours() {
        let ours = Sha256::digest(b"jpeg with exif");
        let descriptor =
            |sha256: Option<String>, size| BlobDescriptor { sha256, size, ..Default::default() };
        let other = Sha256::digest(b"stripped").to_hex();

        assert!(descriptor(Some(ours.to_hex()), Some(14)).check(&ours, 14).is_ok());
        assert!(descriptor(Some(ours.to_hex().to_uppercase()), Some(14)).check(&ours, 14).is_ok());
        assert!(descriptor(Some(ours.to_hex()), None).check(&ours, 14).is_ok());
        assert!(matches!(
            descriptor(Some(other), Some(14)).check(&ours, 14),
            Err(Mismatch::Hash { .. })
        ));
        assert_eq!(
            descriptor(Some(ours.to_hex()), Some(0)).check(&ours, 14),
            Err(Mismatch::Size { reported: 0, expected: 14 })
        );
        assert_eq!(descriptor(None, Some(14)).check(&ours, 14), Err(Mismatch::MissingHash));
    }
}
