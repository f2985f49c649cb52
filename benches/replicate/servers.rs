//! Real blossom-server instances on loopback, each in its own temporary
//! directory, started as the integration tests start them, and optionally
//! behind a shaping proxy.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proxy::{Proxy, Shaping};

/// A running blossom-server, killed (and its files removed) when dropped.
pub(crate) struct Server {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    child: Child,
    /// Removed after `drop` has stopped the server.
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts an instance that accepts uploads from `pubkey_hex` only.
    pub(crate) fn start(bin: &Path, pubkey_hex: &str) -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::try_start(bin, pubkey_hex) {
                return server;
            }
        }
        panic!("blossom-server did not start after 5 tries");
    }

    /// The server's own address, not the proxy's.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn try_start(bin: &Path, pubkey_hex: &str) -> Option<Self> {
        let dir = tempfile::Builder::new().prefix("bench-server-").tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("whitelist.txt"), format!("{pubkey_hex}\n")).expect("whitelist");
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(d.join("server.log")).expect("server log");
        let mut child = Command::new(bin)
            .current_dir(d)
            .args(["--bind", &addr.to_string(), "--base-url", &format!("http://{addr}")])
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
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn blossom-server");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if child.try_wait().ok()?.is_some() {
                // Most likely the port was taken between choosing and binding.
                return None;
            }
            if healthy(addr) {
                return Some(Self { addr, child, _dir: dir });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /health` answers 200.
fn healthy(addr: SocketAddr) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return false };
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.1 200")
}

/// Servers, each behind its own proxy, in the order clients list them.
/// Fields drop in order: the proxies go before the servers they front.
pub(crate) struct Cluster {
    /// One per server, same order.
    pub(crate) proxies: Vec<Proxy>,
    /// The servers themselves.
    pub(crate) servers: Vec<Server>,
}

impl Cluster {
    /// Starts `count` fresh servers behind proxies shaped by `shaping`.
    pub(crate) async fn start(
        bin: &Path,
        pubkey_hex: &str,
        count: usize,
        shaping: Shaping,
    ) -> Self {
        let bin: PathBuf = bin.to_owned();
        let pubkey = pubkey_hex.to_owned();
        let servers = tokio::task::spawn_blocking(move || {
            std::thread::scope(|scope| {
                let starting: Vec<_> =
                    (0..count).map(|_| scope.spawn(|| Server::start(&bin, &pubkey))).collect();
                starting.into_iter().map(|s| s.join().expect("server start")).collect::<Vec<_>>()
            })
        })
        .await
        .expect("server start");
        let mut proxies = Vec::with_capacity(count);
        for server in &servers {
            proxies.push(Proxy::start(server.addr, shaping).await.expect("proxy"));
        }
        Self { proxies, servers }
    }

    /// The addresses clients use: the proxies'.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.proxies.iter().map(|p| p.url.clone()).collect()
    }

    /// The servers' own addresses, bypassing the proxies: for scenarios
    /// where forwarding would only take CPU from the servers.
    pub(crate) fn direct_urls(&self) -> Vec<String> {
        self.servers.iter().map(Server::url).collect()
    }

    /// Bytes all clients sent into the servers so far.
    pub(crate) fn uplink(&self) -> u64 {
        self.proxies
            .iter()
            .map(|p| p.traffic.uplink.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}
