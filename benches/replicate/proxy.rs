//! A TCP proxy that shapes the link to one server: it holds every chunk
//! back for a fixed delay in each direction and can cap the bandwidth.
//! This machine has no netem, and a proxy of our own also counts what
//! crosses it: bytes each way and the start of every HTTP request.
//!
//! The queue between reading and writing is bounded, so a slow writer
//! slows the reader and the sender feels back-pressure, as over a real
//! link; the delay is added per chunk, and a new connection's first chunk
//! also waits out the round trip its handshake would have cost.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks read ahead of the writer, per direction and connection.
const QUEUE_CHUNKS: usize = 64;

/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;

/// What marks the start of a request in the client's stream. A body of
/// random bytes holds it by chance about never.
const REQUEST_MARK: &[u8] = b" HTTP/1.1\r\n";

/// How the link is shaped.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Shaping {
    /// Added to every chunk, in each direction: the round trip grows by
    /// twice this.
    pub(crate) one_way_delay: Duration,
    /// Bytes per second in each direction; `None` for no cap.
    pub(crate) bandwidth: Option<u64>,
    /// Note when each request starts. Scanning costs CPU per byte, so
    /// scenarios that move large bodies leave it off.
    pub(crate) count_requests: bool,
}

/// What crossed the proxy.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    /// Bytes from clients to the server.
    pub(crate) uplink: AtomicU64,
    /// Bytes from the server to clients.
    pub(crate) downlink: AtomicU64,
    /// When each request began to arrive.
    pub(crate) requests: Mutex<Vec<Instant>>,
}

/// A running proxy in front of one server; stops when dropped.
pub(crate) struct Proxy {
    /// Where clients connect.
    pub(crate) url: String,
    /// What crossed it so far.
    pub(crate) traffic: Arc<Traffic>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub(crate) async fn start(upstream: SocketAddr, shaping: Shaping) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let traffic = Arc::new(Traffic::default());
        let accept = tokio::spawn(accept_loop(listener, upstream, shaping, traffic.clone()));
        Ok(Self { url, traffic, accept })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    shaping: Shaping,
    traffic: Arc<Traffic>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let traffic = traffic.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = pipe(client_read, server_write, shaping, traffic.clone(), Direction::Up);
            let down = pipe(server_read, client_write, shaping, traffic, Direction::Down);
            tokio::join!(up, down);
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// Copies one direction of a connection until the reader ends, each chunk
/// no earlier than its arrival plus the delay.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shaping: Shaping,
    traffic: Arc<Traffic>,
    direction: Direction,
) {
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<(Instant, Bytes)>(QUEUE_CHUNKS);
    let reader = async move {
        let mut marks = MarkScanner::default();
        let mut buf = vec![0u8; CHUNK];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let now = Instant::now();
            if direction == Direction::Up {
                traffic.uplink.fetch_add(n as u64, Ordering::Relaxed);
                let found = if shaping.count_requests { marks.count(&buf[..n]) } else { 0 };
                if found > 0 {
                    let mut requests = traffic.requests.lock().expect("not poisoned");
                    requests.extend(std::iter::repeat_n(now, found));
                }
            } else {
                traffic.downlink.fetch_add(n as u64, Ordering::Relaxed);
            }
            if chunk_tx.send((now, Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        let mut line_free = Instant::now();
        // The kernel completes the client's connect at once; over a real
        // link the handshake costs a round trip before the first byte.
        let mut handshake = match direction {
            Direction::Up => 2 * shaping.one_way_delay,
            Direction::Down => Duration::ZERO,
        };
        while let Some((arrived, chunk)) = chunk_rx.recv().await {
            tokio::time::sleep_until(arrived + shaping.one_way_delay + handshake).await;
            handshake = Duration::ZERO;
            if let Some(rate) = shaping.bandwidth {
                // The link is busy until the previous chunk has gone out.
                tokio::time::sleep_until(line_free).await;
                let busy = Duration::from_secs_f64(chunk.len() as f64 / rate as f64);
                line_free = Instant::now().max(line_free) + busy;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Counts request marks in a stream read in chunks, including marks cut
/// in two by a chunk boundary.
#[derive(Debug, Default)]
struct MarkScanner {
    tail: Vec<u8>,
}

impl MarkScanner {
    fn count(&mut self, chunk: &[u8]) -> usize {
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(chunk);
        let found = window.windows(REQUEST_MARK.len()).filter(|w| *w == REQUEST_MARK).count();
        let keep = window.len().min(REQUEST_MARK.len() - 1);
        self.tail = window[window.len() - keep..].to_vec();
        found
    }
}
