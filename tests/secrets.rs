//! The secret key never leaves the signer: not in logs at trace level, not
//! in errors, not in the database, whichever way it was given.

mod support;

use support::fault_server::{FaultServer, Reply};
use support::{BlossomServer, TestKey, cli, run_async, write_config};

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_key_appears_nowhere() {
    let key = TestKey::new();
    let nsec = key.signer.to_nsec();
    let real = BlossomServer::start(&key.pubkey_hex);
    // A server that refuses every token, so error paths run too.
    let refusing = FaultServer::start().await;
    refusing.rule("PUT", "/upload", None, Reply::status(401));
    refusing.rule("PUT", "/mirror", None, Reply::status(401));
    let work = tempfile::tempdir().unwrap();
    let retry = "[retry]\nmax_attempts = 2\nmin_delay = \"50ms\"\nmax_delay = \"100ms\"\n";
    let config = write_config(work.path(), &[&real.url, &refusing.url], retry);
    let file = work.path().join("note.txt");
    std::fs::write(&file, "a note\n").unwrap();
    let key_file = work.path().join("key.nsec");
    std::fs::write(&key_file, format!("{nsec}\n")).unwrap();

    let mut outputs = Vec::new();
    for (i, secret) in [nsec.as_str(), key.secret_hex.as_str()].into_iter().enumerate() {
        let db = work.path().join(format!("db-{i}.db"));
        let mut command = cli(None);
        command.env("BLOSSOM_SECRET_KEY", secret).env("RUST_LOG", "trace");
        command.arg("--config").arg(&config).arg("--db").arg(&db).arg("push").arg(&file);
        outputs.push((run_async(command).await, db));
    }
    let mut command = cli(None);
    command.env("RUST_LOG", "trace").arg("--key-file").arg(&key_file);
    command
        .arg("--config")
        .arg(&config)
        .arg("--db")
        .arg(work.path().join("db-2.db"))
        .arg("push")
        .arg(&file);
    outputs.push((run_async(command).await, work.path().join("db-2.db")));

    for (output, db) in &outputs {
        assert_eq!(
            output.status.code(),
            Some(1),
            "one server refuses: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut everything = output.stdout.clone();
        everything.extend_from_slice(&output.stderr);
        for suffix in ["", "-wal", "-shm"] {
            let path = format!("{}{suffix}", db.display());
            if let Ok(bytes) = std::fs::read(&path) {
                everything.extend_from_slice(&bytes);
            }
        }
        let text = String::from_utf8_lossy(&everything);
        assert!(text.contains("TRACE"), "trace logging was on");
        assert!(!text.contains(&nsec), "nsec leaked");
        assert!(!text.contains(&key.secret_hex), "hex secret leaked");
        assert!(!text.to_lowercase().contains(&key.secret_hex[..32]), "part of the secret leaked");
    }
}
