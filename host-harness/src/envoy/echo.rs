//! The upstream Envoy forwards to: a loopback HTTP/1.1 server (std threads, keep-alive) that
//! answers each request with a JSON echo of it — the same shape as the harness's modelled
//! upstream, so a scenario checks "what the upstream saw" the same way in both worlds.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::envoy::client::Response;
use crate::envoy::http1::{self, BodyFraming};

/// A request as the upstream received it; also the JSON body of the echo reply:
/// `{"method":…,"path":…,"headers":[[name,value],…],"body":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHead {
    pub method: String,
    /// The request-target exactly as received (path and query).
    pub path: String,
    /// Header names as they were on the wire (Envoy sends lowercase), in order, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// The body, decoded as UTF-8 (lossily).
    pub body: String,
}

impl RequestHead {
    /// Parses the echo upstream's JSON body (what a [`Response`] from the echo carries).
    pub fn from_echo_body(body: &[u8]) -> Result<Self> {
        serde_json::from_slice(body).with_context(|| {
            format!(
                "the body is not an echo of a request: {:?}",
                String::from_utf8_lossy(body)
            )
        })
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

type Handler = dyn Fn(&RequestHead) -> Response + Send + Sync;

/// A loopback HTTP/1.1 server; stops (closing every connection) on drop.
pub struct EchoUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    handler: Box<Handler>,
    received: Mutex<Vec<RequestHead>>,
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
}

impl EchoUpstream {
    /// Starts the echo server on an ephemeral 127.0.0.1 port: `200`,
    /// `content-type: application/json`, body = [`RequestHead`] JSON.
    pub fn start() -> Result<Self> {
        Self::start_with(|head| {
            let body = serde_json::to_vec(head).unwrap_or_default();
            Response {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body,
            }
        })
    }

    /// Starts a server that answers with `handler`'s response (e.g. a JWKS endpoint for an extra
    /// cluster). `content-length` is added; the handler's own one is dropped.
    pub fn start_with(
        handler: impl Fn(&RequestHead) -> Response + Send + Sync + 'static,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the echo upstream")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            handler: Box::new(handler),
            received: Mutex::new(Vec::new()),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = std::thread::Builder::new()
            .name(format!("echo-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, accept_shared))
            .context("spawning the echo accept thread")?;
        Ok(Self {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    /// The bound address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Vec<RequestHead> {
        lock(&self.shared.received).clone()
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        for (_, stream) in lock(&self.shared.connections).drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking connection thread must not take the whole server down with it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.connections).insert(id, clone);
        }
        let conn_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("echo-conn-{id}"))
            .spawn(move || {
                let _ = serve_connection(stream, &conn_shared);
                lock(&conn_shared.connections).remove(&id);
            });
        if spawned.is_err() {
            lock(&shared.connections).remove(&id);
        }
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared) -> Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(head) = http1::read_head(&mut reader)? {
        let mut slots = vec![httparse::EMPTY_HEADER; http1::header_slots(&head)];
        let mut req = httparse::Request::new(&mut slots);
        let httparse::Status::Complete(_) = req.parse(&head)? else {
            bail!("incomplete request head");
        };
        let headers = http1::header_pairs(req.headers);
        let framing = http1::framing(&headers, BodyFraming::None)?;
        let body = http1::read_body(&mut reader, framing)?;
        let close = http1::wants_close(&headers) || req.version == Some(0);
        let received = RequestHead {
            method: req.method.unwrap_or_default().to_string(),
            path: req.path.unwrap_or_default().to_string(),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let response = (shared.handler)(&received);
        lock(&shared.received).push(received);
        writer.write_all(&encode_response(&response, close))?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
    Ok(())
}

fn encode_response(response: &Response, close: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        if !name.eq_ignore_ascii_case("content-length") {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    out.push_str(&format!("content-length: {}\r\n", response.body.len()));
    if close {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&response.body);
    bytes
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
