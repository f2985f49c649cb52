//! Bad input through the command line: each gets one line on stderr naming
//! the bad value, exit code 2, and leaves the database as it was.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::{BlossomServer, TestKey, cli, run, status_json, write_config};

/// A database holding one blob stored on one real server, and what
/// `status --json` says about it.
struct Baseline {
    server: BlossomServer,
    key: TestKey,
    dir: tempfile::TempDir,
    config: PathBuf,
    db: PathBuf,
    file: PathBuf,
    status: serde_json::Value,
}

fn baseline() -> Baseline {
    let key = TestKey::new();
    let server = BlossomServer::start(&key.pubkey_hex);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[&server.url], "");
    let db = dir.path().join("replicator.db");
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, "hello, blossom\n").unwrap();
    let output = run(cli(Some(&key))
        .arg("--config")
        .arg(&config)
        .arg("--db")
        .arg(&db)
        .arg("push")
        .arg(&file));
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let status = status_json(&db);
    Baseline { server, key, dir, config, db, file, status }
}

impl Baseline {
    /// The CLI with this baseline's config, database and key.
    fn cli(&self) -> std::process::Command {
        let mut command = cli(Some(&self.key));
        command.arg("--config").arg(&self.config).arg("--db").arg(&self.db);
        command
    }

    /// Asserts the bad-input contract and returns the error line.
    fn refused(&self, output: Output, names: &str) -> String {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line expected: {stderr:?}");
        assert!(lines[0].contains(names), "{:?} does not name {names:?}", lines[0]);
        assert_eq!(status_json(&self.db), self.status, "database changed");
        lines[0].to_owned()
    }
}

#[test]
fn bad_input_is_refused_with_one_line_and_the_database_intact() {
    let b = baseline();
    let dir = b.dir.path();

    b.refused(run(b.cli().args(["push", "/nonexistent/photo.jpg"])), "/nonexistent/photo.jpg");

    let folder = dir.join("folder");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("a.txt"), "a").unwrap();
    let line = b.refused(run(b.cli().arg("push").arg(&folder)), folder.to_str().unwrap());
    assert!(line.contains("--recursive"), "{line}");

    #[cfg(unix)]
    {
        let looped = dir.join("looped");
        std::fs::create_dir_all(looped.join("sub")).unwrap();
        std::os::unix::fs::symlink(&looped, looped.join("sub/back")).unwrap();
        b.refused(run(b.cli().args(["push", "-r"]).arg(&looped)), "back");
    }

    b.refused(
        run(b.cli().args(["--server", "wss://relay.example", "push"]).arg(&b.file)),
        "wss://relay.example",
    );

    let secret = "nsec1thisisnotavalidkeyatallqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq";
    let line = b.refused(
        run(b.cli().env("BLOSSOM_SECRET_KEY", secret).arg("push").arg(&b.file)),
        "BLOSSOM_SECRET_KEY",
    );
    assert!(!line.contains(secret), "the key must not be echoed: {line}");

    let line = b.refused(
        run(b.cli().env_remove("BLOSSOM_SECRET_KEY").arg("push").arg(&b.file)),
        "BLOSSOM_SECRET_KEY",
    );
    assert!(line.contains("--key-file"), "{line}");
    b.refused(
        run(b.cli().arg("--key-file").arg(dir.join("no-such-key")).arg("push").arg(&b.file)),
        "no-such-key",
    );
}

#[test]
fn bad_relays_and_public_keys_are_refused_with_one_line() {
    let b = baseline();
    let dead = format!("ws://127.0.0.1:{}", support::free_port());
    let push_from = |author: &str, relay: &str| {
        let mut command = b.cli();
        command.args(["push", "--servers-from", author, "--relay", relay]).arg(&b.file);
        run(&mut command)
    };

    b.refused(push_from("npub1nonsense", &dead), "npub1nonsense");
    b.refused(push_from(&b.key.pubkey_hex, "https://relay.example"), "https://relay.example");
    let line = b.refused(push_from(&b.key.pubkey_hex, &dead), &dead);
    assert!(line.contains("cannot connect"), "{line}");
    b.refused(run(b.cli().args(["servers", "list", "cafe", "--relay", &dead])), "\"cafe\"");
    b.refused(
        run(b.cli().args(["servers", "list", &b.key.pubkey_hex, "--relay", "ftp://x.example"])),
        "ftp://x.example",
    );
    let line = b.refused(
        run(b.cli().args(["servers", "publish", "--relay", "wss://me:hunter2@relay.example"])),
        "relay.example",
    );
    assert!(!line.contains("hunter2"), "{line}");
    let line = b.refused(run(b.cli().args(["servers", "list", &b.key.pubkey_hex])), "--relay");
    assert!(line.contains("no relays"), "{line}");
}

/// `mirror` of a source that takes the connection and never answers, or
/// answers 404, ends with one line naming it instead of hanging or asking
/// the servers to mirror a size it made up.
#[test]
fn a_mirror_source_that_hangs_or_is_missing_is_named() {
    let b = baseline();
    let config = std::fs::read_to_string(&b.config).unwrap() + "[timeouts]\nrequest = \"1s\"\n";
    let config_path = b.dir.path().join("quick.toml");
    std::fs::write(&config_path, config).unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hash = "b".repeat(64);
    let hanging = format!("http://{}/{hash}", silent.local_addr().unwrap());
    let mirror = |source: &str| {
        let mut command = cli(Some(&b.key));
        command.arg("--config").arg(&config_path).arg("--db").arg(&b.db);
        command.args(["mirror", source]);
        let started = std::time::Instant::now();
        let output = run(&mut command);
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{source}: gave up late");
        output
    };
    let line = b.refused(mirror(&hanging), &hanging);
    assert!(line.contains("timed out"), "{line}");
    let missing = format!("{}/{hash}", b.server.url);
    let line = b.refused(mirror(&missing), &missing);
    assert!(line.contains("404"), "{line}");
}

#[test]
fn broken_configs_name_the_key() {
    let b = baseline();
    let cases = [
        ("[[servers]]\nurl = \"http://127.0.0.1:1\"\nspeed = 3\n", "speed"),
        ("[[servers]]\nurl = \"http://127.0.0.1:1\"\nrate = \"fast\"\n", "rate"),
        ("[retry]\nmax_delay = \"forever\"\n", "retry.max_delay"),
        ("[[servers]]\nurl = \"ftp://files.example\"\n", "servers[0].url"),
        ("relays = [\"https://relay.example\"]\n", "relays[0]"),
        ("this is not toml", "line 1"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let config = b.dir.path().join(format!("broken-{i}.toml"));
        std::fs::write(&config, text).unwrap();
        let output = run(cli(Some(&b.key))
            .arg("--config")
            .arg(&config)
            .arg("--db")
            .arg(&b.db)
            .arg("push")
            .arg(&b.file));
        let line = b.refused(output, key);
        assert!(line.contains(config.to_str().unwrap()), "names the file: {line}");
    }
    let missing = b.dir.path().join("missing.toml");
    b.refused(
        run(cli(Some(&b.key)).arg("--config").arg(&missing).arg("--db").arg(&b.db).arg("run")),
        "missing.toml",
    );
}

#[test]
fn status_refuses_unknown_and_malformed_hashes() {
    let b = baseline();
    let unknown = "0".repeat(64);
    b.refused(run(b.cli().args(["status", &unknown])), &unknown);
    let output = run(b.cli().args(["status", "not-a-hash"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not-a-hash"));
    let missing_db = b.dir.path().join("nowhere/replicator.db");
    let output = run(cli(None).args(["status", "--db"]).arg(&missing_db));
    assert_eq!(output.status.code(), Some(2));
    assert!(!missing_db.exists(), "status must not create a database");
}

#[test]
fn a_database_from_a_newer_version_is_left_alone() {
    let b = baseline();
    let db = Path::new(&b.db);
    let connection = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             c.execute(\"INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'future', 1, x'00', 0)\"); c.commit()",
        )
        .arg(db)
        .status()
        .unwrap();
    assert!(connection.success());
    let before = std::fs::read(db).unwrap();
    let output = run(b.cli().arg("push").arg(&b.file));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("newer version") && stderr.contains(db.to_str().unwrap()), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(std::fs::read(db).unwrap(), before, "the database file was not touched");
}

/// A database the process may read but not write (a read-only mount, a
/// file owned by someone else): one line naming it, a non-zero exit, and
/// the record as it was.
#[cfg(unix)]
#[test]
fn a_read_only_database_is_refused_with_one_line() {
    use std::os::unix::fs::PermissionsExt as _;
    let b = baseline();
    let new_file = b.dir.path().join("new.txt");
    std::fs::write(&new_file, "one more\n").unwrap();
    for entry in std::fs::read_dir(b.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    std::fs::set_permissions(b.dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut command = as_unprivileged(b.cli());
    let output = run(command.arg("push").arg(&new_file));
    std::fs::set_permissions(b.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(b.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    b.refused(output, b.db.to_str().unwrap());
}

/// The disk fills up while the database grows (here: a file size limit,
/// which fails writes the way a full disk does): one line naming the
/// database, a non-zero exit, and the record as it was, since the failed
/// transaction is rolled back.
#[cfg(unix)]
#[test]
fn a_full_disk_fails_cleanly_and_keeps_the_record() {
    let b = baseline();
    let many = b.dir.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..6000 {
        std::fs::write(many.join(format!("file-with-a-longish-name-{i:05}.txt")), format!("{i}\n"))
            .unwrap();
    }
    let db_size = std::fs::metadata(&b.db).unwrap().len();
    // Room for the database as it is, not for what the push would add.
    let limit_kib = db_size / 1024 + 256;
    let mut command = std::process::Command::new("bash");
    command.arg("-c").arg(format!("ulimit -f {limit_kib}; trap '' XFSZ; exec \"$@\"")).arg("bash");
    let inner = b.cli();
    command.arg(inner.get_program()).args(inner.get_args());
    for (name, value) in inner.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let output = run(command.args(["push", "-r"]).arg(&many));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.code().is_some_and(|c| c != 0), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr:?}");
    assert!(lines[0].contains(b.db.to_str().unwrap()), "{:?} does not name the database", lines[0]);
    assert_eq!(status_json(&b.db), b.status, "database changed");
}

/// The command run as an unprivileged user when the tests run as root
/// (root ignores file modes), else as it is.
#[cfg(unix)]
fn as_unprivileged(command: std::process::Command) -> std::process::Command {
    if !nix_is_root() {
        return command;
    }
    let mut wrapped = std::process::Command::new("setpriv");
    wrapped.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
    wrapped.arg(command.get_program()).args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(name, value),
            None => wrapped.env_remove(name),
        };
    }
    wrapped
}

#[cfg(unix)]
fn nix_is_root() -> bool {
    let output = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}
