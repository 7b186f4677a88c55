//! The rig's one upstream: a loopback HTTP/1.1 server (std threads, keep-alive). By default it
//! answers each request with a JSON echo of it — the same shape as the harness's modelled
//! upstream, so a scenario checks "what the upstream saw" the same way in both worlds; it can also
//! answer with a handler's response (a JWKS endpoint, a cluster) or, for benchmarks, with one
//! fixed response and no record of what it received.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use crate::http1;
use crate::message::{RequestHead, Response};

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
    /// Off for [`EchoUpstream::fixed`]: a benchmark's millions of requests are not kept.
    record: bool,
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
        Self::serve(Box::new(handler), true)
    }

    /// Starts a server that answers every request with `response` and keeps no record of the
    /// requests ([`received`](Self::received) stays empty): the benchmark's upstream.
    pub fn fixed(response: Response) -> Result<Self> {
        Self::serve(Box::new(move |_| response.clone()), false)
    }

    fn serve(handler: Box<Handler>, record: bool) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the echo upstream")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            handler,
            record,
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
    while let Some((received, close)) = http1::read_request(&mut reader)? {
        let response = (shared.handler)(&received);
        if shared.record {
            lock(&shared.received).push(received);
        }
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
