//! Blob identity and local sources: the SHA-256 that names a blob, streaming
//! hashing of files, and turning the paths a user names into a list of files.
//!
//! Nothing here speaks HTTP; `blossom` moves the bytes, this module only says
//! what they are.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256 as Sha256Hasher};

/// Buffer size for hashing: large enough to keep the hasher busy, small
/// enough that memory stays flat however large the file is.
const HASH_BUFFER: usize = 1 << 20;

/// The SHA-256 of a blob's bytes: the blob's identity on every server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256([u8; 32]);

/// A string that is not 64 hexadecimal characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sha256 {value:?}: expected 64 hexadecimal characters")]
pub struct ParseHashError {
    value: String,
}

impl Sha256 {
    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The hash a blob URL names (BUD-01): the last run of exactly 64 hex
    /// digits in its path, so `https://cdn.example/u/<hash>.pdf` and
    /// `<hash>` alone both work. Query and fragment are not looked at.
    pub fn from_url(url: &str) -> Option<Self> {
        let path = match url::Url::parse(url) {
            Ok(parsed) if parsed.has_host() => parsed.path().to_owned(),
            _ => url.split(['?', '#']).next().unwrap_or_default().to_owned(),
        };
        path.split(|c: char| !c.is_ascii_hexdigit())
            .rfind(|run| run.len() == 64)
            .and_then(|run| run.parse().ok())
    }

    /// The raw digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hexadecimal, as Blossom writes hashes everywhere.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Hashes a byte slice.
    pub fn digest(bytes: &[u8]) -> Self {
        Self(Sha256Hasher::digest(bytes).into())
    }
}

impl FromStr for Sha256 {
    type Err = ParseHashError;

    /// Parses 64 hexadecimal characters, in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut bytes).is_err() {
            return Err(ParseHashError { value: s.chars().take(80).collect() });
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 over a stream of chunks, counting the bytes it saw.
#[derive(Clone, Default)]
pub(crate) struct StreamHasher {
    hasher: Sha256Hasher,
    len: u64,
}

impl StreamHasher {
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn finish(self) -> (Sha256, u64) {
        (Sha256(self.hasher.finalize().into()), self.len)
    }
}

/// A file on disk, hashed, ready to be replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBlob {
    /// The hash of the file's bytes when it was read.
    pub sha256: Sha256,
    /// The file's length in bytes when it was read.
    pub size: u64,
    /// The MIME type declared on upload.
    pub mime: String,
    /// Absolute path of the file.
    pub path: PathBuf,
}

impl LocalBlob {
    /// Reads and hashes a file (blocking; run it off the async threads).
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be opened or read.
    pub fn from_path(path: &Path) -> Result<Self, InputError> {
        let io_err = |source| InputError::Unreadable { path: path.to_owned(), source };
        let absolute = std::path::absolute(path).map_err(io_err)?;
        let file = File::open(&absolute).map_err(|e| InputError::from_io(path, e))?;
        let mut head = Vec::with_capacity(SNIFF_LEN);
        let mut file = io::BufReader::with_capacity(HASH_BUFFER, file);
        (&mut file).take(SNIFF_LEN as u64).read_to_end(&mut head).map_err(io_err)?;
        let (sha256, size) = hash_reader(io::Cursor::new(&head).chain(file)).map_err(io_err)?;
        Ok(Self { sha256, size, mime: declared_type(&absolute, &head), path: absolute })
    }
}

/// How many leading bytes are read to tell what a file really is.
const SNIFF_LEN: usize = 8 * 1024;

/// Hashes everything a reader yields, with constant memory.
pub(crate) fn hash_reader(mut reader: impl Read) -> io::Result<(Sha256, u64)> {
    let mut hasher = StreamHasher::default();
    let mut buf = vec![0u8; HASH_BUFFER];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(hasher.finish()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The type a file is declared as: from its extension, or opaque bytes.
///
/// Opaque is the honest default: servers that sniff content refuse bytes
/// that do not match a declared media type.
pub fn mime_for(path: &Path) -> String {
    mime_guess::from_path(path).first_raw().unwrap_or(OPAQUE).to_owned()
}

const OPAQUE: &str = "application/octet-stream";

/// The type to declare for a file whose first bytes are `head` (field case
/// B18): what the bytes show themselves to be when their format has a
/// signature; opaque when the name promises a format with a signature that
/// the bytes lack (an encrypted `photo.jpg`, which servers that sniff would
/// refuse); else what the name says.
pub fn declared_type(path: &Path, head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_owned();
    }
    let named = mime_for(path);
    if infer::is_mime_supported(&named) { OPAQUE.to_owned() } else { named }
}

/// A path the user named that cannot be pushed.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The path does not exist.
    #[error("{}: no such file or directory", path.display())]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// A symbolic link whose target does not exist.
    #[error("{}: broken symbolic link", path.display())]
    BrokenLink {
        /// The link.
        path: PathBuf,
    },
    /// A directory was named without asking for recursion.
    #[error("{} is a directory (pass -r/--recursive to push the files in it)", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
    },
    /// A symbolic link leads back to one of its own parents.
    #[error("{}: symbolic link loop", path.display())]
    SymlinkLoop {
        /// The link that closes the loop.
        path: PathBuf,
    },
    /// Neither a regular file nor a directory (a socket, a device, a dangling link).
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Reading failed.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
}

impl InputError {
    fn from_io(path: &Path, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::NotFound if path.symlink_metadata().is_ok() => {
                Self::BrokenLink { path: path.to_owned() }
            }
            io::ErrorKind::NotFound => Self::NotFound { path: path.to_owned() },
            _ => Self::Unreadable { path: path.to_owned(), source },
        }
    }

    /// The path this error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::NotFound { path }
            | Self::BrokenLink { path }
            | Self::Directory { path }
            | Self::SymlinkLoop { path }
            | Self::NotAFile { path }
            | Self::Unreadable { path, .. } => path,
        }
    }
}

/// Expands the paths a user named into the regular files to push, in a
/// stable order (sorted within each directory), without duplicates.
///
/// Symbolic links are followed; a link that loops is an error rather than
/// something to skip, because silently pushing less than was asked for is
/// worse than refusing.
///
/// # Errors
///
/// The first path that does not exist, is a directory without `recursive`,
/// loops, or is not a regular file.
pub fn collect_files(paths: &[PathBuf], recursive: bool) -> Result<Vec<PathBuf>, InputError> {
    let mut files = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| InputError::from_io(path, e))?;
        if meta.is_file() {
            if seen.insert(path.clone()) {
                files.push(path.clone());
            }
            continue;
        }
        if !meta.is_dir() {
            return Err(InputError::NotAFile { path: path.clone() });
        }
        if !recursive {
            return Err(InputError::Directory { path: path.clone() });
        }
        for entry in walkdir::WalkDir::new(path).follow_links(true).sort_by_file_name() {
            let entry = entry.map_err(|e| walk_error(path, e))?;
            if entry.file_type().is_file() && seen.insert(entry.path().to_owned()) {
                files.push(entry.into_path());
            } else if !entry.file_type().is_file() && !entry.file_type().is_dir() {
                return Err(InputError::NotAFile { path: entry.into_path() });
            }
        }
    }
    Ok(files)
}

fn walk_error(root: &Path, err: walkdir::Error) -> InputError {
    let path = err.path().unwrap_or(root).to_owned();
    if err.loop_ancestor().is_some() {
        return InputError::SymlinkLoop { path };
    }
    match err.into_io_error() {
        Some(source) => InputError::from_io(&path, source),
        None => InputError::NotAFile { path },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trips_through_hex() {
        let hash = Sha256::digest(b"hello");
        let hex = hash.to_hex();
        assert_eq!(hex, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(hex.parse::<Sha256>().unwrap(), hash);
        assert_eq!(hex.to_uppercase().parse::<Sha256>().unwrap(), hash);
    }

    #[test]
    fn the_hash_of_a_blob_url_is_the_last_64_hex_run_of_its_path() {
        let h = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let other = "b".repeat(64);
        let cases = [
            (format!("https://cdn.example/{h}"), Some(h)),
            (format!("https://cdn.example/{h}.pdf"), Some(h)),
            (format!("https://cdn.example/{other}/{h}.pdf?x={other}#{other}"), Some(h)),
            (format!("https://{other}.example/files/{h}"), Some(h)),
            (format!("https://cdn.example/{h}0"), None),
            (h.to_owned(), Some(h)),
            (format!("/{h}.png"), Some(h)),
            ("https://cdn.example/abc".to_owned(), None),
        ];
        for (url, expected) in cases {
            assert_eq!(Sha256::from_url(&url).map(|s| s.to_hex()).as_deref(), expected, "{url}");
        }
    }

    #[test]
    fn bad_hashes_are_refused_and_named() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(65)] {
            let err = bad.parse::<Sha256>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    /// Field case B18: declare what the bytes are, not what the name says.
    #[test]
    fn b18_the_declared_type_follows_the_bytes() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        let random = [0x5a, 0x13, 0xf0, 0x99, 0x01, 0x02, 0x03, 0x04, 0xaa, 0xbb];
        let cases: [(&str, &[u8], &str); 6] = [
            ("photo.jpg", &random, "application/octet-stream"),
            ("photo.jpg.enc", &random, "application/octet-stream"),
            ("photo.jpg", png, "image/png"),
            ("no-extension", png, "image/png"),
            ("notes.txt", b"hello", "text/plain"),
            ("page.html", b"<html></html>", "text/html"),
        ];
        for (name, head, expected) in cases {
            assert_eq!(declared_type(Path::new(name), head), expected, "{name}");
        }
    }

    #[test]
    fn from_path_hashes_the_sniffed_head_too() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 10, SNIFF_LEN - 1, SNIFF_LEN, SNIFF_LEN + 1, 3 * HASH_BUFFER + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &data).unwrap();
            let blob = LocalBlob::from_path(&path).unwrap();
            assert_eq!((blob.sha256, blob.size), (Sha256::digest(&data), len as u64));
        }
    }

    #[test]
    fn streamed_hash_matches_one_shot_hash() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (hash, len) = hash_reader(&data[..]).unwrap();
        assert_eq!(hash, Sha256::digest(&data));
        assert_eq!(len, data.len() as u64);
    }

    #[test]
    fn directories_need_recursive() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "a").unwrap();
        let err = collect_files(&[dir.path().to_owned()], false).unwrap_err();
        assert!(matches!(err, InputError::Directory { .. }), "{err}");
        assert!(err.to_string().contains("--recursive"));
        let files = collect_files(&[dir.path().to_owned()], true).unwrap();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn missing_paths_are_named() {
        let err = collect_files(&["/nonexistent/blob.bin".into()], true).unwrap_err();
        assert_eq!(err.to_string(), "/nonexistent/blob.bin: no such file or directory");
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::os::unix::fs::symlink(dir.path(), sub.join("back")).unwrap();
        let err = collect_files(&[dir.path().to_owned()], true).unwrap_err();
        assert!(matches!(err, InputError::SymlinkLoop { .. }), "{err}");
        assert!(err.to_string().contains("back"), "{err}");
    }

    #[test]
    fn mime_falls_back_to_opaque_bytes() {
        assert_eq!(mime_for(Path::new("a.png")), "image/png");
        assert_eq!(mime_for(Path::new("noext")), "application/octet-stream");
    }
}
