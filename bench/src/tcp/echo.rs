//! The benchmark's TCP upstream: a loopback echo server that keeps nothing. A fixed pool of
//! threads accept on one socket and each serves its connection to the end (echo every read at
//! once, close when the peer does), so a run of 100k connections costs no thread spawn and no
//! memory per connection (the rig's `TcpEchoUpstream` records every connection's bytes, which
//! tests need and a benchmark does not).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

/// A loopback TCP echo server; stops on drop.
pub(crate) struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl EchoServer {
    /// Binds 127.0.0.1 on an ephemeral port with `workers` threads: at most that many
    /// connections are served at once (the others wait in the accept queue).
    pub(crate) fn start(workers: usize) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the echo upstream")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers.max(1) {
            let listener = listener.try_clone().context("sharing the echo listener")?;
            let stop = Arc::clone(&stop);
            let handle = std::thread::Builder::new()
                .name(format!("bench-echo-{i}"))
                .spawn(move || accept_loop(&listener, &stop))
                .context("starting an echo thread")?;
            handles.push(handle);
        }
        Ok(Self {
            addr,
            stop,
            workers: handles,
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // One connection per worker wakes it from `accept`; it sees the flag and returns.
        for _ in &self.workers {
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => serve(stream),
            // E.g. out of file descriptors: do not spin.
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Echoes every read until the peer closes (or a read stalls for 30 s), then closes.
fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(buf.get(..n).unwrap_or_default()).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_what_it_reads_and_closes_when_the_peer_does() {
        let server = EchoServer::start(2).unwrap();
        for _ in 0..5 {
            let mut client = TcpStream::connect(server.addr()).unwrap();
            client.write_all(b"hello, echo").unwrap();
            let mut back = [0u8; 11];
            client.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"hello, echo");
            client.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        }
        drop(server);
    }
}
