//! The test harness shared by the integration tests: real blossom-server
//! instances on loopback, a key, real input files, the CLI binary, and
//! checks made against the servers themselves.

#![allow(dead_code, unreachable_pub)]

pub mod fault_server;
pub mod forged_relay;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use blossom_replicator::{KeySigner, Sha256, Signer as _};
use sha2::Digest as _;

/// The version of the third-party server the tests run against.
pub const SERVER_VERSION: &str = "0.5.6";

/// Where `scripts/install-blossom-server.sh` puts the server binary, unless
/// `BLOSSOM_SERVER_BIN` names another.
pub fn blossom_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BLOSSOM_SERVER_BIN") {
        return bin.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    let bin = cache
        .join(format!("blossom-replicator/blossom-server-{SERVER_VERSION}/bin/blossom-server"));
    assert!(
        bin.exists(),
        "blossom-server {SERVER_VERSION} not found at {}: run scripts/install-blossom-server.sh \
         (scripts/test.sh does) or set BLOSSOM_SERVER_BIN",
        bin.display()
    );
    bin
}

/// A test identity: its secret key in hex and the signer.
pub struct TestKey {
    pub signer: KeySigner,
    pub secret_hex: String,
    pub pubkey_hex: String,
}

impl TestKey {
    pub fn new() -> Self {
        let signer = KeySigner::generate();
        let nsec = signer.to_nsec();
        let secret_hex = nostr_secret_hex(&nsec);
        let pubkey_hex = signer.public_key().to_hex();
        Self { signer, secret_hex, pubkey_hex }
    }
}

fn nostr_secret_hex(nsec: &str) -> String {
    use nostr::prelude::{FromBech32 as _, SecretKey};
    SecretKey::from_bech32(nsec).expect("valid nsec").to_secret_hex()
}

/// A real blossom-server on 127.0.0.1, in its own temporary directory,
/// killed when dropped.
pub struct BlossomServer {
    pub url: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl BlossomServer {
    /// Starts an instance that accepts uploads from `pubkey_hex` only.
    pub fn start(pubkey_hex: &str) -> Self {
        Self::start_with(pubkey_hex, &[])
    }

    /// Starts an instance with extra command-line flags.
    pub fn start_with(pubkey_hex: &str, extra: &[&str]) -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::try_start(pubkey_hex, extra) {
                return server;
            }
        }
        panic!("blossom-server did not start after 5 tries");
    }

    fn try_start(pubkey_hex: &str, extra: &[&str]) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("whitelist.txt"), format!("{pubkey_hex}\n")).unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(d.join("server.log")).unwrap();
        let mut child = Command::new(blossom_server_bin())
            .current_dir(d)
            .args(["--bind", &format!("127.0.0.1:{port}"), "--base-url", &url])
            .arg("--data-dir")
            .arg(d.join("blobs"))
            .arg("--db-path")
            .arg(d.join("blossom.db"))
            .arg("--whitelist")
            .arg(d.join("whitelist.txt"))
            .args(["--require-auth", "--no-rate-limit", "--no-relay", "--body-limit", "4294967296"])
            .arg("--nip34-lmdb-path")
            .arg(d.join("relay_db"))
            .arg("--nip34-repos-path")
            .arg(d.join("repos"))
            .arg("--iroh-key-file")
            .arg(d.join("iroh.key"))
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn blossom-server");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                // Most likely the port was taken between choosing and binding.
                return None;
            }
            if health(port) {
                return Some(Self { url, dir, child });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// How many times the server logged a completed upload of each hash.
    /// The server logs every complete `PUT /upload` body, also of a blob it
    /// already had, so a count above one is bytes sent twice.
    pub fn upload_counts(&self) -> HashMap<String, u32> {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap();
        let mut counts = HashMap::new();
        for line in log.lines().filter(|l| l.contains("\"blob uploaded\"")) {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let hash = value["fields"]["blob.sha256"].as_str().unwrap().to_owned();
            *counts.entry(hash).or_insert(0) += 1;
        }
        counts
    }

    /// Deletes a blob's bytes behind the server's back is not possible
    /// portably; this asks for the blob and hashes what comes back.
    pub async fn fetch_hash(&self, hash: &str) -> Option<(Sha256, u64)> {
        let response = reqwest::get(format!("{}/{hash}", self.url)).await.unwrap();
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(response.status().is_success(), "GET {hash}: {}", response.status());
        let mut hasher = sha2::Sha256::new();
        let mut len = 0u64;
        let mut response = response;
        while let Some(chunk) = response.chunk().await.unwrap() {
            hasher.update(&chunk);
            len += chunk.len() as u64;
        }
        Some((Sha256::from_bytes(hasher.finalize().into()), len))
    }
}

impl Drop for BlossomServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /health` answers 200: the server is ready.
fn health(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.1 200")
}

/// The version of the third-party Nostr relay the BUD-03 tests run against.
pub const NOSTR_RELAY_VERSION: &str = "1.14";

/// Where `scripts/install-nostr-relay.sh` puts the relay command, unless
/// `NOSTR_RELAY_BIN` names another.
pub fn nostr_relay_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("NOSTR_RELAY_BIN") {
        return bin.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    let bin =
        cache.join(format!("blossom-replicator/nostr-relay-{NOSTR_RELAY_VERSION}/bin/nostr-relay"));
    assert!(
        bin.exists(),
        "nostr-relay {NOSTR_RELAY_VERSION} not found at {}: run scripts/install-nostr-relay.sh \
         (scripts/test.sh does) or set NOSTR_RELAY_BIN",
        bin.display()
    );
    bin
}

/// A real Nostr relay (nostr-relay from PyPI) on 127.0.0.1 with its own
/// SQLite file, killed with its workers when dropped.
pub struct NostrRelay {
    pub url: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl NostrRelay {
    pub fn start() -> Self {
        for _ in 0..5 {
            if let Some(relay) = Self::try_start() {
                return relay;
            }
        }
        panic!("nostr-relay did not start after 5 tries");
    }

    fn try_start() -> Option<Self> {
        use std::os::unix::process::CommandExt as _;

        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let port = free_port();
        let config = format!(
            "storage:\n  sqlalchemy.url: sqlite+aiosqlite:///{}\n\
             gunicorn:\n  bind: 127.0.0.1:{port}\n  workers: 1\n\
             authentication:\n  enabled: false\n\
             verification:\n  nip05_verification: disabled\n",
            d.join("nostr.sqlite3").display()
        );
        std::fs::write(d.join("relay.yaml"), config).unwrap();
        let log = std::fs::File::create(d.join("relay.log")).unwrap();
        // Its own process group, so that the gunicorn master and its
        // worker are stopped together.
        let mut child = Command::new(nostr_relay_bin())
            .current_dir(d)
            .arg("-c")
            .arg(d.join("relay.yaml"))
            .arg("serve")
            .process_group(0)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn nostr-relay");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            if relay_info(port) {
                return Some(Self { url: format!("ws://127.0.0.1:{port}"), dir, child });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        kill_group(&mut child);
        None
    }

    /// The relay's log, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }
}

impl Drop for NostrRelay {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Kills a child started in its own process group, with everything it
/// started.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
    let _ = child.kill();
    let _ = child.wait();
}

/// The relay answers a NIP-11 information request: it is ready.
fn relay_info(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/nostr+json\r\n\
                   Connection: close\r\n\r\n";
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.1 200")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A config file for these servers with limits generous enough for tests.
pub fn write_config(dir: &Path, servers: &[&str], extra: &str) -> PathBuf {
    write_config_with_rate(dir, servers, 500.0, 100, extra)
}

/// A config file whose servers take `rate` requests per second after a
/// burst of `burst`: slow enough for a signal or a kill to land mid-run.
pub fn write_config_with_rate(
    dir: &Path,
    servers: &[&str],
    rate: f64,
    burst: u32,
    extra: &str,
) -> PathBuf {
    let mut text = format!("[defaults]\nrate = {rate:?}\nburst = {burst}\nmax_in_flight = 8\n\n");
    for server in servers {
        text.push_str(&format!("[[servers]]\nurl = \"{server}\"\n\n"));
    }
    text.push_str(extra);
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The CLI binary under test.
pub fn cli(key: Option<&TestKey>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_blossom-replicator"));
    command
        .env_remove("BLOSSOM_SECRET_KEY")
        .env_remove("BLOSSOM_SECRET_KEY_FILE")
        .env_remove("RUST_LOG");
    // Keep a developer's own config and data directories out of the tests.
    command.env("XDG_CONFIG_HOME", "/nonexistent/config").env("XDG_DATA_HOME", "/nonexistent/data");
    if let Some(key) = key {
        command.env("BLOSSOM_SECRET_KEY", &key.secret_hex);
    }
    command.stdin(Stdio::null());
    command
}

/// Runs a command and returns its output, failing the test on a spawn error.
pub fn run(command: &mut Command) -> Output {
    command.output().expect("run blossom-replicator")
}

/// Copies up to `limit` regular files (no symlinks) from a system
/// directory into `dest`, keeping their relative paths: real files that
/// nobody here wrote.
pub fn copy_real_files(from: &Path, dest: &Path, limit: usize) -> usize {
    let mut copied = 0;
    let mut stack = vec![from.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let Ok(kind) = entry.file_type() else { continue };
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && copied < limit {
                let target = dest.join(path.strip_prefix(from).unwrap());
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                if std::fs::copy(&path, &target).is_ok() {
                    copied += 1;
                }
            }
        }
    }
    copied
}

/// Writes `size` bytes of deterministic pseudo-random data.
pub fn write_random_file(path: &Path, size: u64, seed: u64) {
    use std::io::Write as _;
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut state = seed | 1;
    let mut written = 0u64;
    let mut block = vec![0u8; 1 << 20];
    while written < size {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = (size - written).min(block.len() as u64) as usize;
        file.write_all(&block[..n]).unwrap();
        written += n as u64;
    }
    file.flush().unwrap();
}

/// Parses `status --json`.
pub fn status_json(db: &Path) -> serde_json::Value {
    let output = run(cli(None).args(["status", "--json", "--db"]).arg(db));
    assert!(
        output.status.code().is_some_and(|c| c <= 1),
        "status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("status --json prints JSON")
}

/// Runs a command off the async threads, so servers running in this test's
/// runtime keep answering while the command waits on them.
pub async fn run_async(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("run blossom-replicator"))
        .await
        .unwrap()
}

/// The state of every replica, as (sha256, server, state, method).
pub fn replica_states(db: &Path) -> Vec<(String, String, String, String)> {
    let status = status_json(db);
    let mut out = Vec::new();
    for blob in status["blobs"].as_array().unwrap() {
        for replica in blob["replicas"].as_array().unwrap() {
            out.push((
                blob["sha256"].as_str().unwrap().to_owned(),
                replica["server"].as_str().unwrap().to_owned(),
                replica["state"].as_str().unwrap().to_owned(),
                replica["method"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    out
}

/// A command's stdout and stderr, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Counts jobs in a state, read straight from the SQLite file.
pub fn jobs_in_state(db: &Path, state: &str) -> u64 {
    let output = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\
             'SELECT count(*) FROM jobs WHERE state = ?', (sys.argv[2],)).fetchone()[0])",
        )
        .arg(db)
        .arg(state)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
}
