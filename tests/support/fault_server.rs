//! A Blossom server of our own for what real servers cannot be made to do:
//! refuse mirror, fail with chosen statuses (with or without `X-Reason`,
//! `Retry-After`, HTML pages), cut connections mid-body, stall, go down for
//! a while, describe the wrong bytes or describe them in older shapes, and
//! check tokens strictly. It speaks plain HTTP/1.1 on 127.0.0.1 (one
//! request per connection), stores blobs for real in memory so a success
//! can be checked, and records every request.

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
    /// Read this many body bytes, then reset the connection (no status).
    ResetAfter(usize),
    /// Announce the whole blob, send this many bytes of it, then close.
    CutBodyAfter(usize),
    /// Store the upload, then never answer: the server has the blob but
    /// the client cannot know (a crash right after the server's 201).
    StoreThenHang,
    /// Store normally, but answer with a descriptor in an older or looser
    /// shape: `"created"` (instead of `uploaded`), `"strings"` (numbers as
    /// strings), `"nip94-object"`, `"nip94-array"`.
    OldDescriptor(&'static str),
}

impl Reply {
    /// A status with an HTML page and no reason header, as a proxy in front
    /// of the server sends it.
    pub fn html(code: u16) -> Self {
        let title = format!("{code} {}", reason(code));
        Self::Status {
            code,
            headers: vec![("Content-Type".into(), "text/html".into())],
            body: format!(
                "<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center><hr><center>nginx</center></body></html>"
            ),
        }
    }

    /// A status with `Retry-After`.
    pub fn retry_after(code: u16, value: &str) -> Self {
        Self::Status {
            code,
            headers: vec![("Retry-After".into(), value.into())],
            body: String::new(),
        }
    }

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
    /// Either encoding, but the event must be right: a valid signature,
    /// kind 24242, `created_at` not in the future, an `expiration` not
    /// passed, the `t` of the request, the blob's hash in an `x` tag, and a
    /// `server` tag on deletes.
    Strict,
    /// `Strict`, and each token accepted once (as blossom-server 0.6.0
    /// does): a token shared by several requests is refused from its
    /// second use on.
    SingleUse,
}

/// Which requests a rule applies to, beyond method and path.
type Condition = Box<dyn Fn(&Seen) -> bool + Send>;

struct Rule {
    method: String,
    path_prefix: String,
    remaining: Option<u32>,
    when: Option<Condition>,
    reply: Reply,
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub at: std::time::Instant,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body length it announced (`Content-Length`, or BUD-06's
    /// `X-Content-Length` on `HEAD /upload`).
    pub fn length(&self) -> usize {
        let header = if self.method == "HEAD" { "x-content-length" } else { "content-length" };
        self.header(header).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

/// How `GET /list/<pubkey>` behaves (field case B12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListMode {
    /// BUD-12 today: `cursor` and `limit`, newest first.
    #[default]
    Cursor,
    /// An older server: `limit` and `until`, but the cursor is ignored.
    IgnoresCursor,
    /// A server that ignores every paging parameter: each call returns
    /// the whole list.
    IgnoresParams,
    /// Listing turned off (404).
    Disabled,
    /// A 200 whose body is not a bare array: `{"items": [...]}`.
    Wrapped,
    /// A 200 with an HTML page.
    Html,
    /// A 200 with the array cut off mid-way.
    Truncated,
    /// As `IgnoresCursor`, with `per_second` blobs sharing each upload
    /// time (a bulk upload), and `limit` capped at `max_limit` if given.
    SameSecond { per_second: u64, max_limit: Option<usize> },
    /// Every page holds blobs never listed before: a list without end.
    Endless,
}

/// How `GET /<sha256>` answers a `Range` request (field case B23).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RangeMode {
    /// 206 with the rest of the blob and a right `Content-Range`.
    #[default]
    Honour,
    /// 200 with the whole blob, as many servers do.
    Ignore,
    /// 416 Range Not Satisfiable.
    Refuse,
    /// 206, but starting a few bytes later than asked, and saying so in
    /// `Content-Range`.
    WrongOffset,
}

#[derive(Default)]
struct State {
    auth: AuthMode,
    list: ListMode,
    /// How `Range` on GET is answered (field case B23).
    range: RangeMode,
    /// Upload order, for `uploaded` times that differ.
    order: Vec<String>,
    blobs: HashMap<String, (Vec<u8>, String)>,
    rules: Vec<Rule>,
    requests: Vec<Seen>,
    uploads: HashMap<String, u32>,
    /// Bodies larger than this get an HTML 413, as from a proxy.
    max_size: Option<usize>,
    /// Token refusals under `AuthMode::Strict`, with why.
    refused_tokens: Vec<String>,
    /// Ids of the tokens accepted, under `AuthMode::SingleUse`.
    used_tokens: std::collections::HashSet<String>,
    /// Report events received on `PUT /report`, as JSON.
    reports: Vec<serde_json::Value>,
}

/// The server; it stops when dropped.
pub struct FaultServer {
    pub url: String,
    state: Arc<Mutex<State>>,
    down: Arc<tokio::sync::Notify>,
    down_for: Arc<Mutex<std::time::Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let down = Arc::new(tokio::sync::Notify::new());
        let down_for = Arc::new(Mutex::new(std::time::Duration::ZERO));
        let task = tokio::spawn(serve(
            listener,
            url.clone(),
            state.clone(),
            down.clone(),
            down_for.clone(),
        ));
        Self { url, state, down, down_for, task }
    }

    /// Answers requests whose method and path start match with `reply`,
    /// always (`times: None`) or the next `times` times.
    pub fn rule(&self, method: &str, path_prefix: &str, times: Option<u32>, reply: Reply) {
        self.push_rule(method, path_prefix, times, None, reply);
    }

    /// As [`FaultServer::rule`], for the requests `when` picks.
    pub fn rule_if(
        &self,
        method: &str,
        path_prefix: &str,
        times: Option<u32>,
        when: impl Fn(&Seen) -> bool + Send + 'static,
        reply: Reply,
    ) {
        self.push_rule(method, path_prefix, times, Some(Box::new(when)), reply);
    }

    fn push_rule(
        &self,
        method: &str,
        path_prefix: &str,
        times: Option<u32>,
        when: Option<Condition>,
        reply: Reply,
    ) {
        self.state.lock().unwrap().rules.push(Rule {
            method: method.into(),
            path_prefix: path_prefix.into(),
            remaining: times,
            when,
            reply,
        });
    }

    /// Bodies over `size` bytes get an HTML 413 (on `PUT /upload`, and on
    /// `HEAD /upload` by `X-Content-Length`).
    pub fn set_max_size(&self, size: usize) {
        self.state.lock().unwrap().max_size = Some(size);
    }

    /// Closes the listening socket for `duration`: connections are refused,
    /// as from a server that crashed and restarts.
    pub fn go_down(&self, duration: std::time::Duration) {
        *self.down_for.lock().unwrap() = duration;
        self.down.notify_one();
    }

    /// How listing behaves.
    pub fn set_list_mode(&self, mode: ListMode) {
        self.state.lock().unwrap().list = mode;
    }

    /// How `Range` requests are answered from now on.
    pub fn set_range_mode(&self, mode: RangeMode) {
        self.state.lock().unwrap().range = mode;
    }

    /// Stores a blob as if it had been uploaded.
    pub fn put(&self, bytes: &[u8]) -> String {
        let hash = hex::encode(sha2::Sha256::digest(bytes));
        store(&self.state, &hash, bytes.to_vec(), "application/octet-stream".into());
        hash
    }

    /// Every request seen, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Reports received (BUD-09), each a verified kind 1984 event.
    pub fn reports(&self) -> Vec<serde_json::Value> {
        self.state.lock().unwrap().reports.clone()
    }

    /// Why tokens were refused under [`AuthMode::Strict`].
    pub fn refused_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().refused_tokens.clone()
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
        state
            .requests
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(path_prefix))
            .count()
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

async fn serve(
    mut listener: TcpListener,
    base: String,
    state: Arc<Mutex<State>>,
    down: Arc<tokio::sync::Notify>,
    down_for: Arc<Mutex<std::time::Duration>>,
) {
    let address = listener.local_addr().unwrap();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(handle(stream, base.clone(), state.clone()));
            }
            () = down.notified() => {
                drop(listener);
                let pause = *down_for.lock().unwrap();
                tokio::time::sleep(pause).await;
                listener = loop {
                    match TcpListener::bind(address).await {
                        Ok(listener) => break listener,
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                    }
                };
            }
        }
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
    let seen = Seen {
        method: request.method.clone(),
        path: request.path.clone(),
        headers: request.headers.clone(),
        at: std::time::Instant::now(),
    };
    let scripted = {
        let mut state = state.lock().unwrap();
        state.requests.push(seen.clone());
        let too_large = state.max_size.is_some_and(|max| seen.length() > max)
            && seen.path == "/upload"
            && matches!(seen.method.as_str(), "PUT" | "HEAD");
        let rule = state.rules.iter_mut().find(|r| {
            r.method == request.method
                && request.path.starts_with(&r.path_prefix)
                && r.remaining != Some(0)
                && r.when.as_ref().is_none_or(|when| when(&seen))
        });
        let scripted = rule.map(|r| {
            if let Some(n) = &mut r.remaining {
                *n -= 1;
            }
            r.reply.clone()
        });
        // A proxy's limit comes before the server sees anything.
        if too_large { Some(Reply::html(413)) } else { scripted }
    };
    if let Some(Reply::StallAfter(n)) = scripted {
        let _ = read_body(&mut stream, &mut request, Some(n)).await;
        std::future::pending::<()>().await;
    }
    if let Some(Reply::CutBodyAfter(n)) = scripted {
        let (code, headers, body) = normal(&request, &base, &state).await;
        let mut head = format!("HTTP/1.1 {code} {}\r\nConnection: close\r\n", reason(code));
        for (name, value) in &headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&body[..n.min(body.len())]).await;
        let _ = stream.shutdown().await;
        return;
    }
    if let Some(Reply::ResetAfter(n)) = scripted {
        let _ = read_body(&mut stream, &mut request, Some(n)).await;
        // Closing with unread data in the receive buffer sends a reset.
        let _ = stream.set_zero_linger();
        return;
    }
    if let Some(Reply::Status { .. }) = scripted {
        // Like a proxy, refuse without waiting for the body: reading it
        // would hide whether the client sends it at all.
        if request.method == "PUT" && request.path == "/upload" {
            return respond(&mut stream, &mut request, scripted).await;
        }
    }
    if read_body(&mut stream, &mut request, None).await.is_none() {
        return;
    }
    let auth = state.lock().unwrap().auth;
    let token_check = match (request.method.as_str(), request.path.as_str()) {
        ("PUT" | "HEAD", "/upload" | "/mirror") => Some("upload"),
        ("PUT" | "HEAD", "/media") => Some("media"),
        ("DELETE", _) => Some("delete"),
        _ => None,
    };
    let refusal = token_check
        .and_then(|verb| check_token(auth, &request, verb, &mut state.lock().unwrap().used_tokens));
    if let Some(why) = &refusal {
        state
            .lock()
            .unwrap()
            .refused_tokens
            .push(format!("{} {}: {why}", request.method, request.path));
    }
    let (code, headers, body) = match scripted {
        _ if refusal.is_some() => {
            (401, vec![("X-Reason".into(), refusal.unwrap_or_default())], Vec::new())
        }
        Some(Reply::StallAfter(_) | Reply::ResetAfter(_) | Reply::CutBodyAfter(_)) => {
            unreachable!("handled above")
        }
        Some(Reply::OldDescriptor(shape)) => {
            let (code, headers, body) = normal(&request, &base, &state).await;
            let mut json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let object = json.as_object_mut().unwrap();
            match shape {
                "created" => {
                    let uploaded = object.remove("uploaded").unwrap();
                    object.insert("created".into(), uploaded);
                }
                "strings" => {
                    for key in ["size", "uploaded"] {
                        let text = object[key].to_string();
                        object.insert(key.into(), text.into());
                    }
                }
                "nip94-object" => {
                    object.insert(
                        "nip94".into(),
                        serde_json::json!({"m": "text/plain", "x": object["sha256"]}),
                    );
                }
                "nip94-array" => {
                    object.insert(
                        "nip94".into(),
                        serde_json::json!([["m", "text/plain"], ["x", object["sha256"]]]),
                    );
                }
                other => panic!("unknown descriptor shape {other}"),
            }
            (code, headers, json.to_string().into_bytes())
        }
        Some(Reply::StoreThenHang) => {
            let _ = normal(&request, &base, &state).await;
            std::future::pending::<()>().await;
            unreachable!()
        }
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
    write_response(&mut stream, &request, code, &headers, &body).await;
}

/// Answers a scripted status at once, then reads and drops the rest of the
/// body before closing, as nginx does (closing with unread data would
/// reset the connection and hide the answer).
async fn respond(stream: &mut TcpStream, request: &mut Request, scripted: Option<Reply>) {
    let Some(Reply::Status { code, headers, body }) = scripted else { return };
    write_response_head(stream, request, code, &headers, body.as_bytes()).await;
    let drain = async {
        let len: usize =
            request.headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut left = len.saturating_sub(request.body.len());
        let mut chunk = vec![0u8; 64 * 1024];
        while left > 0 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
    let _ = stream.shutdown().await;
}

async fn write_response(
    stream: &mut TcpStream,
    request: &Request,
    code: u16,
    headers: &[(String, String)],
    body: &[u8],
) {
    write_response_head(stream, request, code, headers, body).await;
    let _ = stream.shutdown().await;
}

/// Writes the status, headers and body, leaving the connection open.
async fn write_response_head(
    stream: &mut TcpStream,
    request: &Request,
    code: u16,
    headers: &[(String, String)],
    body: &[u8],
) {
    let mut response = format!("HTTP/1.1 {code} {}\r\nConnection: close\r\n", reason(code));
    for (name, value) in headers {
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
        let _ = stream.write_all(body).await;
    }
}

/// Checks the token the way a strict server of the given kind would;
/// `Some(why)` when it is refused.
fn check_token(
    mode: AuthMode,
    request: &Request,
    verb: &str,
    used: &mut std::collections::HashSet<String>,
) -> Option<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let token = request.headers.get("authorization").and_then(|h| h.strip_prefix("Nostr "));
    let decoded = match (mode, token) {
        (AuthMode::Lenient, _) => return None,
        (_, None) => return Some("no token".into()),
        (AuthMode::StandardOnly, Some(t)) => STANDARD.decode(t),
        (AuthMode::UrlSafeOnly, Some(t)) => URL_SAFE_NO_PAD.decode(t),
        (AuthMode::Strict | AuthMode::SingleUse, Some(t)) => {
            URL_SAFE_NO_PAD.decode(t).or_else(|_| STANDARD.decode(t))
        }
    };
    let Some(json) = decoded.ok() else { return Some("bad token encoding".into()) };
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&json) else {
        return Some("token is not JSON".into());
    };
    if event["kind"] != 24242 {
        return Some("not a kind 24242 event".into());
    }
    if !matches!(mode, AuthMode::Strict | AuthMode::SingleUse) {
        return None;
    }
    let Ok(signed) = serde_json::from_slice::<nostr::prelude::Event>(&json) else {
        return Some("not an event".into());
    };
    if signed.verify().is_err() {
        return Some("bad signature".into());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    if signed.created_at.as_secs() > now {
        return Some(format!("created_at {} is in the future", signed.created_at.as_secs()));
    }
    let tags: Vec<Vec<String>> = signed.tags.iter().map(|t| t.as_slice().to_vec()).collect();
    let tag = |name: &'static str| {
        tags.iter().filter(move |t| t.first().is_some_and(|n| n == name)).filter_map(|t| t.get(1))
    };

    match tag("expiration").next().and_then(|e| e.parse::<u64>().ok()) {
        Some(expiration) if expiration > now => {}
        Some(_) => return Some("expired".into()),
        None => return Some("no expiration".into()),
    }
    if tag("t").next().map(String::as_str) != Some(verb) {
        return Some(format!("t tag is not {verb}"));
    }
    let hash = match verb {
        "delete" => {
            request.path.trim_start_matches('/').split('.').next().unwrap_or_default().to_owned()
        }
        _ => request.headers.get("x-sha-256").cloned().unwrap_or_default(),
    };
    if !hash.is_empty() && !tag("x").any(|x| *x == hash) {
        return Some(format!("no x tag for {hash}"));
    }
    if verb == "delete" && tag("server").next().is_none() {
        return Some("delete token not scoped with a server tag".into());
    }
    if mode == AuthMode::SingleUse && !used.insert(signed.id.to_hex()) {
        return Some("token already used".into());
    }
    None
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
        // BUD-06: the size limit and the token were checked before.
        ("HEAD", "upload" | "media") => (200, Vec::new(), Vec::new()),
        // BUD-05: "optimising" appends a trailer, so the output differs.
        ("PUT", "media") => {
            let mut output = request.body.clone();
            output.extend_from_slice(b"\n(optimised)\n");
            let hash = hex::encode(sha2::Sha256::digest(&output));
            let len = output.len();
            store(state, &hash, output, "application/octet-stream".into());
            let (_, headers, body) = descriptor(base, &hash, len, "application/octet-stream", true);
            (200, headers, body)
        }
        ("PUT", "report") => {
            let Ok(event) = serde_json::from_slice::<nostr::prelude::Event>(&request.body) else {
                return (400, vec![("X-Reason".into(), "not an event".into())], Vec::new());
            };
            if event.verify().is_err() || event.kind.as_u16() != 1984 {
                return (400, vec![("X-Reason".into(), "not a signed report".into())], Vec::new());
            }
            let json = serde_json::from_slice(&request.body).unwrap();
            state.lock().unwrap().reports.push(json);
            (200, Vec::new(), Vec::new())
        }
        ("GET", list) if list.starts_with("list/") => list_blobs(request, base, state),
        ("HEAD" | "GET", _) => {
            let state = state.lock().unwrap();
            let Some((bytes, mime)) = state.blobs.get(&hash) else {
                return (404, Vec::new(), Vec::new());
            };
            let from = request
                .headers
                .get("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|r| r.parse::<usize>().ok())
                .filter(|_| request.method == "GET" && state.range != RangeMode::Ignore);
            let mut headers = vec![("Content-Type".into(), mime.clone())];
            match (from, state.range) {
                (Some(_), RangeMode::Refuse) => (416, Vec::new(), Vec::new()),
                (Some(from), mode) if from < bytes.len() => {
                    let from = if mode == RangeMode::WrongOffset {
                        (from + 1000).min(bytes.len() - 1)
                    } else {
                        from
                    };
                    headers.push(("Content-Length".into(), (bytes.len() - from).to_string()));
                    let range = format!("bytes {from}-{}/{}", bytes.len() - 1, bytes.len());
                    headers.push(("Content-Range".into(), range));
                    (206, headers, bytes[from..].to_vec())
                }
                _ => {
                    headers.push(("Content-Length".into(), bytes.len().to_string()));
                    (200, headers, bytes.clone())
                }
            }
        }
        ("DELETE", _) => {
            state.lock().unwrap().blobs.remove(&hash);
            (204, Vec::new(), Vec::new())
        }
        _ => (404, Vec::new(), Vec::new()),
    }
}

fn store(state: &Arc<Mutex<State>>, hash: &str, bytes: Vec<u8>, mime: String) -> bool {
    let mut state = state.lock().unwrap();
    let created = state.blobs.insert(hash.to_owned(), (bytes, mime)).is_none();
    if created {
        state.order.push(hash.to_owned());
    }
    created
}

/// `GET /list/<pubkey>` in the configured mode; every stored blob counts
/// as the caller's. Blob `n` (in upload order) was uploaded at 1e9 + n.
fn list_blobs(
    request: &Request,
    base: &str,
    state: &Arc<Mutex<State>>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let state = state.lock().unwrap();
    if state.list == ListMode::Disabled {
        return (404, vec![("X-Reason".into(), "list is disabled".into())], Vec::new());
    }
    let mut query: HashMap<String, String> = request
        .path
        .split_once('?')
        .map(|(_, q)| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let per_second = match state.list {
        ListMode::SameSecond { per_second, .. } => per_second.max(1),
        _ => 1,
    };
    let invented: Vec<String>;
    let mut items: Vec<(u64, &String)> = if state.list == ListMode::Endless {
        let page = state.requests.iter().filter(|r| r.path.starts_with("/list/")).count();
        invented =
            (0..10).map(|i| hex::encode(sha2::Sha256::digest(format!("{page}/{i}")))).collect();
        invented.iter().map(|h| (1_000_000_000, h)).collect()
    } else {
        state
            .order
            .iter()
            .enumerate()
            .map(|(i, h)| (1_000_000_000 + i as u64 / per_second, h))
            .collect()
    };
    items.reverse();
    if state.list == ListMode::IgnoresParams {
        query.clear();
    }
    let number = |key: &str| query.get(key).and_then(|v| v.parse::<u64>().ok());
    if let Some(until) = number("until") {
        items.retain(|(t, _)| *t <= until);
    }
    let honours_cursor = !matches!(
        state.list,
        ListMode::IgnoresCursor | ListMode::SameSecond { .. } | ListMode::Endless
    );
    if honours_cursor && let Some(cursor) = query.get("cursor") {
        match items.iter().position(|(_, h)| *h == cursor) {
            Some(at) => items.drain(..=at).for_each(drop),
            None => items.clear(),
        }
    }
    let mut limit = number("limit").unwrap_or(u64::MAX) as usize;
    if let ListMode::SameSecond { max_limit: Some(max), .. } = state.list {
        limit = limit.min(max);
    }
    let page: Vec<serde_json::Value> = items
        .iter()
        .take(limit)
        .map(|(uploaded, hash)| {
            let (size, mime) = state
                .blobs
                .get(*hash)
                .map_or((0, "application/octet-stream"), |(bytes, mime)| (bytes.len(), mime.as_str()));
            serde_json::json!({"url": format!("{base}/{hash}"), "sha256": hash, "size": size, "type": mime, "uploaded": uploaded})
        })
        .collect();
    let array = serde_json::Value::Array(page).to_string();
    let body = match state.list {
        ListMode::Wrapped => format!(r#"{{"items":{array}}}"#),
        ListMode::Html => "<html><body><h1>Blobs</h1></body></html>".to_owned(),
        ListMode::Truncated => array[..array.len() / 2].to_owned(),
        _ => array,
    };
    (200, json_headers(), body.into_bytes())
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
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
