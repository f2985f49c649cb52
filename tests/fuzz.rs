//! Property tests over the parsers that read what servers, users and
//! config files hand us: the descriptor parser, server URL normalisation,
//! hash-from-URL extraction and the config loader. None may panic on any
//! input, and each keeps its promises on the inputs it accepts.
//!
//! The normal test run tries 256 inputs per property; `scripts/fuzz.sh`
//! runs many more (`PROPTEST_CASES`) outside CI's critical path.

use std::path::Path;

use blossom_replicator::blossom::BlobDescriptor;
use blossom_replicator::{Config, ServerUrl, Sha256};
use proptest::prelude::*;

/// Any JSON value, nested a few levels, with the descriptor's own keys
/// likely to appear.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,80}".prop_map(serde_json::Value::from),
        "[0-9a-fA-F]{64}".prop_map(serde_json::Value::from),
        "[0-9]{1,25}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        let key = prop_oneof![
            Just("url".to_owned()),
            Just("sha256".to_owned()),
            Just("size".to_owned()),
            Just("type".to_owned()),
            Just("uploaded".to_owned()),
            Just("created".to_owned()),
            Just("nip94".to_owned()),
            "[a-z]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(key, inner, 0..7)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn descriptor_parser_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = BlobDescriptor::parse(&body);
    }

    #[test]
    fn descriptor_parser_never_panics_on_json(value in json_value(), hash in any::<[u8; 32]>(), size in any::<u64>()) {
        let body = serde_json::to_vec(&value).unwrap();
        if let Ok(descriptor) = BlobDescriptor::parse(&body) {
            // Checking against any blob must not panic either.
            let _ = descriptor.check(&Sha256::from_bytes(hash), size);
        }
    }

    /// A well-formed descriptor, in any of the shapes servers write, checks
    /// out against exactly its blob and nothing else.
    #[test]
    fn descriptors_of_every_shape_check_out(
        hash in any::<[u8; 32]>(),
        size in any::<u64>(),
        upper in any::<bool>(),
        size_as_string in any::<bool>(),
        created in any::<bool>(),
        other_size in any::<u64>(),
    ) {
        let hash = Sha256::from_bytes(hash);
        let hex = if upper { hash.to_hex().to_uppercase() } else { hash.to_hex() };
        let size_value = if size_as_string { serde_json::json!(size.to_string()) } else { serde_json::json!(size) };
        let mut object = serde_json::json!({"url": format!("https://cdn.example/{hex}"), "sha256": hex, "size": size_value});
        object[if created { "created" } else { "uploaded" }] = serde_json::json!(1_700_000_000);
        let descriptor = BlobDescriptor::parse(object.to_string().as_bytes()).unwrap();
        prop_assert_eq!(descriptor.check(&hash, size), Ok(()));
        if other_size != size {
            prop_assert!(descriptor.check(&hash, other_size).is_err());
        }
    }

    #[test]
    fn server_urls_normalise_once_and_for_all(input in ".{0,80}") {
        if let Ok(url) = ServerUrl::parse(&input) {
            let text = url.as_str().to_owned();
            prop_assert!(text.starts_with("http://") || text.starts_with("https://"), "{}", text);
            prop_assert!(!text.ends_with('/'), "{}", text);
            prop_assert!(!text.contains('@'), "no credentials: {}", text);
            prop_assert_eq!(ServerUrl::parse(&text).unwrap(), url.clone(), "idempotent");
            prop_assert!(url.endpoint("upload").as_str().ends_with("/upload"));
            prop_assert!(!url.endpoint("upload").as_str()[8..].contains("//"));
        }
    }

    #[test]
    fn server_urls_built_from_parts_are_accepted(
        https in any::<bool>(),
        host in "[a-z][a-z0-9]{0,20}(-[a-z0-9]{1,5})?(\\.[a-z]{2,6}){1,2}",
        port in prop::option::of(1u16..),
        path in "(/[a-z0-9]{0,6}){0,3}/?",
    ) {
        let scheme = if https { "https" } else { "http" };
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let input = format!("{scheme}://{host}{port}{path}");
        let url = ServerUrl::parse(&input);
        prop_assert!(url.is_ok(), "{input}: {url:?}");
        let text = url.unwrap().as_str().to_owned();
        prop_assert!(text.starts_with(&format!("{scheme}://{host}")), "{}", text);
    }

    #[test]
    fn server_url_errors_never_show_credentials(user in "[a-z]{3,8}", secret in "[A-Za-z0-9]{12,20}", host in "[a-z]{3,10}\\.example") {
        let input = format!("https://{user}:{secret}@{host}/");
        let error = ServerUrl::parse(&input).unwrap_err().to_string();
        prop_assert!(!error.contains(&secret), "{}", error);
    }

    #[test]
    fn hash_from_url_never_panics(input in ".{0,200}") {
        let _ = Sha256::from_url(&input);
    }

    #[test]
    fn hash_from_url_finds_the_hash_wherever_the_path_puts_it(
        hash in any::<[u8; 32]>(),
        host in "[a-z]{1,10}\\.example",
        dirs in prop::collection::vec("[g-z]{1,8}", 0..3),
        extension in prop::option::of("[a-z]{1,4}"),
        query in prop::option::of("[a-z0-9=&]{0,30}"),
    ) {
        let hash = Sha256::from_bytes(hash);
        let extension = extension.map(|e| format!(".{e}")).unwrap_or_default();
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        let dirs: String = dirs.iter().map(|d| format!("/{d}")).collect();
        let url = format!("https://{host}{dirs}/{}{extension}{query}", hash.to_hex());
        prop_assert_eq!(Sha256::from_url(&url), Some(hash));
    }

    #[test]
    fn config_loader_never_panics_and_errors_are_one_line(text in ".{0,300}") {
        if let Err(error) = Config::parse(&text, "fuzz.toml", Path::new("/tmp/x.db")) {
            let message = error.to_string();
            prop_assert!(!message.contains('\n'), "{}", message);
            prop_assert!(message.starts_with("fuzz.toml"), "{}", message);
        }
    }

    /// Configs shaped like real ones, with values of every type in every
    /// place: accepted or refused with one line naming a key, never a panic.
    #[test]
    fn config_loader_on_config_shaped_input(
        entries in prop::collection::vec(
            (
                prop_oneof![Just("[defaults]"), Just("[retry]"), Just("[timeouts]"), Just("[queue]"), Just("[replication]"), Just("[[servers]]"), Just("")],
                prop_oneof![
                    Just("url"), Just("rate"), Just("burst"), Just("max_in_flight"), Just("token_encoding"),
                    Just("preflight_min_size"), Just("batch_tokens"), Just("max_attempts"), Just("min_delay"), Just("max_delay"),
                    Just("circuit_failures"), Just("circuit_cooldown"), Just("stall"), Just("lease"),
                    Just("strategy"), Just("min_copies"), Just("database"), Just("bogus"),
                ],
                prop_oneof![
                    Just("\"https://cdn.example\"".to_owned()), Just("\"10s\"".to_owned()), Just("\"mirror\"".to_owned()),
                    Just("\"base64url\"".to_owned()), any::<i64>().prop_map(|n| n.to_string()),
                    any::<f64>().prop_map(|n| format!("{n:?}")), Just("true".to_owned()), "\"[a-z0-9 ]{0,10}\"",
                ],
            ),
            0..12,
        ),
    ) {
        let text: String = entries
            .iter()
            .map(|(section, key, value)| format!("{section}\n{key} = {value}\n"))
            .collect();
        if let Err(error) = Config::parse(&text, "fuzz.toml", Path::new("/tmp/x.db")) {
            prop_assert!(!error.to_string().contains('\n'), "{}", error);
        }
    }
}
