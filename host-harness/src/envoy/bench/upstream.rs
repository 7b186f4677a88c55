//! The benchmark's upstream: a minimal loopback HTTP/1.1 server that answers every request with the
//! same fixed `200` (`content-length: 2`, body `ok`) on keep-alive connections. It does no parsing
//! beyond finding the end of each request head, so it is much cheaper per request than Envoy (the
//! rig measures it directly, see [`crate::envoy::bench::BenchReport::upstream_direct`]).
//!
//! Only bodiless requests are expected (the load generator sends `GET`s); a request head that
//! announces a body closes the connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";

/// The fixed-response upstream; stops (closing every connection) on drop.
pub struct FastUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    accept_thread: Option<JoinHandle<()>>,
}

impl FastUpstream {
    /// Listens on an ephemeral 127.0.0.1 port.
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the bench upstream")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept_thread = {
            let stop = Arc::clone(&stop);
            let connections = Arc::clone(&connections);
            std::thread::Builder::new()
                .name("bench-upstream".into())
                .spawn(move || accept_loop(&listener, &stop, &connections))
                .context("starting the bench upstream")?
        };
        Ok(Self {
            addr,
            stop,
            connections,
            accept_thread: Some(accept_thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FastUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for conn in self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = conn.shutdown(Shutdown::Both);
        }
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, connections: &Mutex<Vec<TcpStream>>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        if let Ok(clone) = stream.try_clone() {
            connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(clone);
        }
        let _ = std::thread::Builder::new()
            .name("bench-upstream-conn".into())
            .spawn(move || serve(stream));
    }
}

/// Answers each complete request head with [`RESPONSE`] until the peer closes.
fn serve(mut stream: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0usize;
    loop {
        let Some(free) = buf.get_mut(filled..) else {
            return;
        };
        if free.is_empty() {
            return; // a head larger than the buffer: not a benchmark request
        }
        let n = match stream.read(free) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let mut start = 0usize;
        while let Some(end) = head_end(buf.get(start..filled).unwrap_or_default()) {
            let head = buf.get(start..start + end).unwrap_or_default();
            if announces_body(head) || stream.write_all(RESPONSE).is_err() {
                return;
            }
            start += end;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
}

/// The length of the first request head in `bytes` (through `\r\n\r\n`), if complete.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

fn announces_body(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').any(|line| {
        let lower = line.to_ascii_lowercase();
        (lower.starts_with(b"content-length:") && !lower.ends_with(b": 0\r"))
            || lower.starts_with(b"transfer-encoding:")
    })
}
