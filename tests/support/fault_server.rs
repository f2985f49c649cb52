//! A Blossom server of our own for what real servers cannot be made to do:
//! refuse mirror, fail with chosen statuses, describe the wrong bytes. It
//! speaks plain HTTP/1.1 on 127.0.0.1 (one request per connection), stores
//! blobs for real in memory so a success can be checked, and counts every
//! request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// A scripted answer, used instead of the normal behaviour.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, with these headers and this body.
    Status { code: u16, headers: Vec<(String, String)>, body: String },
    /// Store normally, but answer with a descriptor naming other bytes.
    WrongDescriptor,
    /// Read this many body bytes, then stop reading and never answer.
    StallAfter(usize),
    /// Read the whole body, think this long, then answer normally.
    Think(std::time::Duration),
}

impl Reply {
    /// A bare status with a reason header.
    pub fn status(code: u16) -> Self {
        Self::Status {
            code,
            headers: vec![("X-Reason".into(), format!("scripted {code}"))],
            body: String::new(),
        }
    }
}

/// Which `Authorization` token encodings the server accepts on uploads
/// and mirrors (field case B03); anything else gets 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Any token, or none.
    #[default]
    Lenient,
    /// Standard base64 with padding only (strict decoders).
    StandardOnly,
    /// URL-safe base64 without padding only (BUD-11 to the letter).
    UrlSafeOnly,
}

struct Rule {
    method: String,
    path_prefix: String,
    remaining: Option<u32>,
    reply: Reply,
}

#[derive(Default)]
struct State {
    auth: AuthMode,
    blobs: HashMap<String, (Vec<u8>, String)>,
    rules: Vec<Rule>,
    requests: Vec<(String, String)>,
    uploads: HashMap<String, u32>,
}

/// The server; it stops when dropped.
pub struct FaultServer {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(serve(listener, url.clone(), state.clone()));
        Self { url, state, task }
    }

    /// Answers requests whose method and path start match with `reply`,
    /// always (`times: None`) or the next `times` times.
    pub fn rule(&self, method: &str, path_prefix: &str, times: Option<u32>, reply: Reply) {
        self.state.lock().unwrap().rules.push(Rule {
            method: method.into(),
            path_prefix: path_prefix.into(),
            remaining: times,
            reply,
        });
    }

    /// Sets which token encodings uploads and mirrors accept.
    pub fn set_auth(&self, mode: AuthMode) {
        self.state.lock().unwrap().auth = mode;
    }

    /// Drops every scripted rule: the server behaves normally again.
    pub fn clear_rules(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Requests seen with this method and path prefix.
    pub fn requests(&self, method: &str, path_prefix: &str) -> usize {
        let state = self.state.lock().unwrap();
        state.requests.iter().filter(|(m, p)| m == method && p.starts_with(path_prefix)).count()
    }

    /// Complete upload bodies received for a hash.
    pub fn uploads(&self, hash: &str) -> u32 {
        self.state.lock().unwrap().uploads.get(hash).copied().unwrap_or(0)
    }

    /// The stored bytes of a blob.
    pub fn blob(&self, hash: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().blobs.get(hash).map(|(bytes, _)| bytes.clone())
    }

    /// Forgets a blob, as if its storage lost it.
    pub fn remove(&self, hash: &str) {
        self.state.lock().unwrap().blobs.remove(hash);
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, base: String, state: Arc<Mutex<State>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(handle(stream, base.clone(), state.clone()));
    }
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Reads the request line and headers; the body's first bytes, read with
/// them, are returned in `body`.
async fn read_head(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = buf[head_end + 4..].to_vec();
    Some(Request { method, path, headers, body })
}

/// Reads body bytes until `limit` (or the declared length) have arrived.
async fn read_body(
    stream: &mut TcpStream,
    request: &mut Request,
    limit: Option<usize>,
) -> Option<()> {
    let len: usize =
        request.headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let want = limit.map_or(len, |l| l.min(len));
    while request.body.len() < want {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        request.body.extend_from_slice(&chunk[..n]);
    }
    Some(())
}

async fn handle(mut stream: TcpStream, base: String, state: Arc<Mutex<State>>) {
    let Some(mut request) = read_head(&mut stream).await else { return };
    let scripted = {
        let mut state = state.lock().unwrap();
        state.requests.push((request.method.clone(), request.path.clone()));
        let rule = state.rules.iter_mut().find(|r| {
            r.method == request.method
                && request.path.starts_with(&r.path_prefix)
                && r.remaining != Some(0)
        });
        rule.map(|r| {
            if let Some(n) = &mut r.remaining {
                *n -= 1;
            }
            r.reply.clone()
        })
    };
    if let Some(Reply::StallAfter(n)) = scripted {
        let _ = read_body(&mut stream, &mut request, Some(n)).await;
        std::future::pending::<()>().await;
    }
    if read_body(&mut stream, &mut request, None).await.is_none() {
        return;
    }
    let auth = state.lock().unwrap().auth;
    let needs_token =
        request.method == "PUT" && matches!(request.path.as_str(), "/upload" | "/mirror");
    let (code, headers, body) = match scripted {
        _ if needs_token && !token_accepted(auth, request.headers.get("authorization")) => {
            (401, vec![("X-Reason".into(), "bad token encoding".into())], Vec::new())
        }
        Some(Reply::StallAfter(_)) => unreachable!("handled above"),
        Some(Reply::Think(wait)) => {
            tokio::time::sleep(wait).await;
            normal(&request, &base, &state).await
        }
        Some(Reply::Status { code, headers, body }) => (code, headers, body.into_bytes()),
        Some(Reply::WrongDescriptor) => {
            let (code, _, _) = normal(&request, &base, &state).await;
            let fake = sha2::Sha256::digest(b"not the bytes you sent");
            let descriptor = serde_json::json!({"url": format!("{base}/{}", hex::encode(fake)), "sha256": hex::encode(fake), "size": 3, "type": "application/octet-stream", "uploaded": 1});
            (code, json_headers(), descriptor.to_string().into_bytes())
        }
        None => normal(&request, &base, &state).await,
    };
    let mut response = format!("HTTP/1.1 {code} {}\r\nConnection: close\r\n", reason(code));
    for (name, value) in &headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    let head_only = request.method == "HEAD";
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        response
            .push_str(&format!("Content-Length: {}\r\n", if head_only { 0 } else { body.len() }));
    }
    response.push_str("\r\n");
    let _ = stream.write_all(response.as_bytes()).await;
    if !head_only {
        let _ = stream.write_all(&body).await;
    }
    let _ = stream.shutdown().await;
}

/// Decodes the token the way a strict server of the given kind would.
fn token_accepted(mode: AuthMode, header: Option<&String>) -> bool {
    use base64::Engine as _;
    let token = header.and_then(|h| h.strip_prefix("Nostr "));
    let decoded = match (mode, token) {
        (AuthMode::Lenient, _) => return true,
        (_, None) => return false,
        (AuthMode::StandardOnly, Some(t)) => base64::engine::general_purpose::STANDARD.decode(t),
        (AuthMode::UrlSafeOnly, Some(t)) => {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t)
        }
    };
    decoded
        .ok()
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .is_some_and(|event| event["kind"] == 24242)
}

fn json_headers() -> Vec<(String, String)> {
    vec![("Content-Type".into(), "application/json".into())]
}

/// What a well-behaved server does.
async fn normal(
    request: &Request,
    base: &str,
    state: &Arc<Mutex<State>>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let path = request.path.trim_start_matches('/');
    let hash = path.split('.').next().unwrap_or_default().to_owned();
    match (request.method.as_str(), path) {
        ("PUT", "upload") => {
            let hash = hex::encode(sha2::Sha256::digest(&request.body));
            if request.headers.get("x-sha-256").is_some_and(|h| *h != hash) {
                return (409, vec![("X-Reason".into(), "hash mismatch".into())], Vec::new());
            }
            let mime = request
                .headers
                .get("content-type")
                .cloned()
                .unwrap_or_else(|| "application/octet-stream".into());
            let created = store(state, &hash, request.body.clone(), mime.clone());
            *state.lock().unwrap().uploads.entry(hash.clone()).or_default() += 1;
            descriptor(base, &hash, request.body.len(), &mime, created)
        }
        ("PUT", "mirror") => {
            let json: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
            let Some(url) = json["url"].as_str() else { return (400, Vec::new(), Vec::new()) };
            let Ok(response) = reqwest::get(url).await else {
                return (502, Vec::new(), Vec::new());
            };
            if !response.status().is_success() {
                return (502, Vec::new(), Vec::new());
            }
            let mime = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_owned();
            let Ok(bytes) = response.bytes().await else { return (502, Vec::new(), Vec::new()) };
            let hash = hex::encode(sha2::Sha256::digest(&bytes));
            let len = bytes.len();
            let created = store(state, &hash, bytes.to_vec(), mime.clone());
            descriptor(base, &hash, len, &mime, created)
        }
        ("HEAD" | "GET", _) => match state.lock().unwrap().blobs.get(&hash) {
            Some((bytes, mime)) => {
                let headers = vec![
                    ("Content-Type".into(), mime.clone()),
                    ("Content-Length".into(), bytes.len().to_string()),
                ];
                (200, headers, bytes.clone())
            }
            None => (404, Vec::new(), Vec::new()),
        },
        ("DELETE", _) => {
            state.lock().unwrap().blobs.remove(&hash);
            (204, Vec::new(), Vec::new())
        }
        _ => (404, Vec::new(), Vec::new()),
    }
}

fn store(state: &Arc<Mutex<State>>, hash: &str, bytes: Vec<u8>, mime: String) -> bool {
    state.lock().unwrap().blobs.insert(hash.to_owned(), (bytes, mime)).is_none()
}

fn descriptor(
    base: &str,
    hash: &str,
    size: usize,
    mime: &str,
    created: bool,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let body = serde_json::json!({"url": format!("{base}/{hash}"), "sha256": hash, "size": size, "type": mime, "uploaded": 1_700_000_000});
    (if created { 201 } else { 200 }, json_headers(), body.to_string().into_bytes())
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
