//! The closed-loop load generator: `connections` keep-alive connections (one thread each, plaintext
//! or mTLS with rustls), each sending the next request of a shared cycle as soon as the previous
//! response is complete, for a fixed time. Every response's status is checked and every request's
//! latency recorded (nanoseconds, exact percentiles from the sorted samples).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::envoy::client::Stream as Conn;
use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::ServerName;

/// What to send, where, for how long.
pub struct Load {
    pub addr: SocketAddr,
    /// `None`: plaintext.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Serialized keep-alive requests, sent in turn (a shared cursor over all connections, so a
    /// pool of N distinct requests repeats each one only every N requests).
    pub requests: Arc<Vec<Vec<u8>>>,
    pub connections: usize,
    pub duration: Duration,
    /// The status every response must have.
    pub expect_status: u16,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub requests: u64,
    pub elapsed: Duration,
    /// Sorted latencies, nanoseconds.
    pub latencies_ns: Vec<u64>,
}

impl LoadResult {
    pub fn requests_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// The `q`-quantile latency (0.0..=1.0).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies_ns.is_empty() {
            return Duration::ZERO;
        }
        let last = self.latencies_ns.len() - 1;
        let index = ((q.clamp(0.0, 1.0) * last as f64).round() as usize).min(last);
        Duration::from_nanos(self.latencies_ns.get(index).copied().unwrap_or_default())
    }
}

/// Runs `load`: connects every connection (TLS handshakes included) first, then calls `at_start`
/// (e.g. to read Envoy's CPU counters), runs for `load.duration`, joins, and calls `at_end`
/// before the connections close. Any connection error or unexpected status fails the run.
pub fn run(
    load: &Load,
    at_start: &mut dyn FnMut() -> Result<()>,
    at_end: &mut dyn FnMut() -> Result<()>,
) -> Result<LoadResult> {
    let connections = load.connections.max(1);
    if load.requests.is_empty() {
        bail!("no request to send");
    }
    let cursor = Arc::new(AtomicUsize::new(0));
    // The workers and this thread meet at each step: all connected (handshakes done), go, all
    // done sending, counters read (then the connections close).
    let barrier = || Arc::new(Barrier::new(connections + 1));
    let (connected, go, done, read) = (barrier(), barrier(), barrier(), barrier());
    let mut threads = Vec::with_capacity(connections);
    for i in 0..connections {
        let (addr, tls) = (load.addr, load.tls.clone());
        let requests = Arc::clone(&load.requests);
        let cursor = Arc::clone(&cursor);
        let barriers = [&connected, &go, &done, &read].map(Arc::clone);
        let duration = load.duration;
        let expect = load.expect_status;
        let thread = std::thread::Builder::new()
            .name(format!("bench-load-{i}"))
            .spawn(move || -> Result<Vec<u64>> {
                let [connected, go, done, read] = barriers;
                let conn = open_conn(addr, tls.as_ref());
                connected.wait();
                go.wait();
                match conn {
                    Ok(mut conn) => {
                        let result = drive(&mut conn, &requests, &cursor, duration, expect);
                        done.wait();
                        read.wait();
                        drop(conn);
                        result
                    }
                    Err(e) => {
                        done.wait();
                        read.wait();
                        Err(e)
                    }
                }
            })
            .context("starting a load thread")?;
        threads.push(thread);
    }
    connected.wait();
    let start_result = at_start();
    let started = Instant::now();
    go.wait();
    done.wait();
    let elapsed = started.elapsed();
    let end_result = if start_result.is_ok() {
        at_end()
    } else {
        Ok(())
    };
    read.wait();
    let mut latencies = Vec::new();
    let mut first_error = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(samples)) => latencies.extend(samples),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(anyhow!("a load thread panicked"));
            }
        }
    }
    start_result?;
    end_result?;
    if let Some(e) = first_error {
        return Err(e);
    }
    latencies.sort_unstable();
    Ok(LoadResult {
        requests: latencies.len() as u64,
        elapsed,
        latencies_ns: latencies,
    })
}

fn drive(
    conn: &mut Conn,
    requests: &[Vec<u8>],
    cursor: &AtomicUsize,
    duration: Duration,
    expect: u16,
) -> Result<Vec<u64>> {
    let mut samples = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    let deadline = start + duration;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(samples);
        }
        let index = cursor.fetch_add(1, Ordering::Relaxed) % requests.len();
        let request = requests.get(index).map(Vec::as_slice).unwrap_or_default();
        conn.write_all(request).context("sending a request")?;
        conn.flush()?;
        let status = read_response(conn, &mut buf)?;
        samples.push(u64::try_from(now.elapsed().as_nanos()).unwrap_or(u64::MAX));
        if status != expect {
            bail!("got status {status}, expected {expect}");
        }
    }
}

/// Reads one response (content-length framed, as every response here is) and returns its status.
fn read_response(conn: &mut Conn, buf: &mut Vec<u8>) -> Result<u16> {
    let mut filled = 0usize;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = conn
            .read(buf.get_mut(filled..).unwrap_or_default())
            .context("reading a response")?;
        if n == 0 {
            bail!("the connection closed before a complete response");
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(buf.get(..filled).unwrap_or_default())? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => continue,
        };
        let status = response.code.unwrap_or_default();
        let mut body_len = 0usize;
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                body_len = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| anyhow!("bad content-length"))?;
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("chunked responses are not expected by the load generator");
            }
        }
        let total = head_len + body_len;
        while filled < total {
            if filled == buf.len() {
                buf.resize(total, 0);
            }
            let n = conn
                .read(buf.get_mut(filled..).unwrap_or_default())
                .context("reading a response body")?;
            if n == 0 {
                bail!("the connection closed inside a response body");
            }
            filled += n;
        }
        if filled > total {
            bail!("more bytes than one response (the load generator does not pipeline)");
        }
        return Ok(status);
    }
}

/// Opens the rig client's connection type (plain or rustls) with the bench's timeouts.
fn open_conn(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Conn> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    match tls {
        None => Ok(Conn::Plain(tcp)),
        Some(config) => {
            let mut conn = rustls::ClientConnection::new(
                Arc::clone(config),
                ServerName::try_from("localhost")?,
            )
            .context("creating a TLS session")?;
            let mut tcp = tcp;
            while conn.is_handshaking() {
                conn.complete_io(&mut tcp)
                    .with_context(|| format!("TLS handshake with {addr}"))?;
            }
            Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
        }
    }
}
