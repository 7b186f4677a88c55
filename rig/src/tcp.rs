//! The rig's TCP (L4) pieces, for wasm network filters in front of `tcp_proxy`:
//!
//! - [`tcp_listener`]: a listener (plaintext, TLS, or mTLS with the rig's certificates) whose
//!   filter chain is the given wasm network filters (`envoy.filters.network.wasm`) then
//!   `tcp_proxy` to a cluster; add it with [`crate::EnvoyConfig::raw_listener`] and find its port
//!   with [`crate::Envoy::listener_addr`];
//! - [`TcpEchoUpstream`]: a loopback TCP server that echoes every read back at once, records what
//!   it received per connection, half-closes when its peer does, and closes the connection itself
//!   50 ms after echoing a read that contains [`UPSTREAM_QUIT`];
//! - [`TcpClient`]: a client (plaintext or rustls, optional client certificate and source IP) that
//!   writes chunks with a pause after each, collects what comes back, and tells whether the proxy
//!   closed the connection before the client did.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use socket2::{Domain, Socket, Type};

use crate::certs::{Certs, ClientCert};
use crate::config::{TlsListener, WasmFilter};

/// The echo upstream closes the connection after echoing a read that contains this word.
pub const UPSTREAM_QUIT: &str = "QUIT";

/// The transport of a [`tcp_listener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpTransport {
    Plaintext,
    /// TLS; a client certificate is asked for, not required.
    Tls,
    /// TLS with a client certificate required (Istio PeerAuthentication STRICT).
    MutualTls,
    /// Istio PERMISSIVE: the `tls_inspector` picks a TLS chain (client certificate required) for
    /// a ClientHello, a plaintext chain otherwise; both run the same filters.
    Permissive,
}

/// A listener `name` (ephemeral port on 127.0.0.1) running `filters` as wasm network filters,
/// then `tcp_proxy` to `cluster`.
pub fn tcp_listener(
    name: &str,
    filters: &[WasmFilter],
    cluster: &str,
    transport: TcpTransport,
    certs: Option<&Certs>,
) -> Result<Value> {
    let mut chain_filters = Vec::new();
    for f in filters {
        chain_filters.push(f.to_network_json()?);
    }
    tcp_listener_with(name, chain_filters, cluster, transport, certs, 0)
}

/// [`tcp_listener`] with any network filters (wasm ones as [`WasmFilter::to_network_json`]
/// gives them, or native ones such as `envoy.filters.network.rbac`) on `port` (0: ephemeral).
/// A TLS listener has a `tls_inspector`, as an Istio sidecar's inbound listener does, so
/// `connection.requested_server_name` is the SNI the client sent.
pub fn tcp_listener_with(
    name: &str,
    mut chain_filters: Vec<Value>,
    cluster: &str,
    transport: TcpTransport,
    certs: Option<&Certs>,
    port: u16,
) -> Result<Value> {
    chain_filters.push(json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": name,
            "cluster": cluster,
        }
    }));
    let mut listener = json!({
        "name": name,
        "stat_prefix": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
    });
    let plain = json!({"filters": chain_filters});
    if transport == TcpTransport::Plaintext {
        listener["filter_chains"] = json!([plain]);
        return Ok(listener);
    }
    let certs = certs.context("a TLS TCP listener needs the rig's certificates")?;
    let mut tls = plain.clone();
    tls["transport_socket"] =
        TlsListener::new(certs, 0).transport_socket(transport != TcpTransport::Tls);
    listener["listener_filters"] = json!([{
        "name": "envoy.filters.listener.tls_inspector",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
        }
    }]);
    listener["filter_chains"] = if transport == TcpTransport::Permissive {
        tls["filter_chain_match"] = json!({"transport_protocol": "tls"});
        let mut plain = plain;
        plain["filter_chain_match"] = json!({"transport_protocol": "raw_buffer"});
        json!([tls, plain])
    } else {
        json!([tls])
    };
    Ok(listener)
}

/// What one upstream connection saw.
#[derive(Debug, Clone, Default)]
pub struct UpstreamConnection {
    pub received: Vec<u8>,
    /// The peer (Envoy) half-closed or closed the connection.
    pub peer_closed: bool,
    /// The upstream closed it (after [`UPSTREAM_QUIT`]).
    pub closed_by_upstream: bool,
}

/// A loopback TCP echo server; stops on drop.
pub struct TcpEchoUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UpstreamConnection>>>,
    accept: Option<JoinHandle<()>>,
}

impl TcpEchoUpstream {
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the TCP upstream")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<UpstreamConnection>>> = Arc::default();
        let accept = {
            let (stop, conns) = (stop.clone(), conns.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let index = {
                                let mut c = conns.lock().unwrap_or_else(PoisonError::into_inner);
                                c.push(UpstreamConnection::default());
                                c.len() - 1
                            };
                            let conns = conns.clone();
                            std::thread::spawn(move || serve(stream, index, &conns));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Ok(Self {
            addr,
            stop,
            conns,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every connection so far, in accept order.
    pub fn connections(&self) -> Vec<UpstreamConnection> {
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for TcpEchoUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, index: usize, conns: &Mutex<Vec<UpstreamConnection>>) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let update = |f: &mut dyn FnMut(&mut UpstreamConnection)| {
        let mut c = conns.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = c.get_mut(index) {
            f(conn);
        }
    };
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => {
                update(&mut |c| c.peer_closed = true);
                let _ = stream.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                let data = buf.get(..n).unwrap_or_default().to_vec();
                update(&mut |c| c.received.extend_from_slice(&data));
                let _ = stream.write_all(&data);
                if String::from_utf8_lossy(&data).contains(UPSTREAM_QUIT) {
                    // A pause between the echo and the close, so that Envoy always reads them
                    // apart (data, then end of stream), whatever the load.
                    std::thread::sleep(Duration::from_millis(50));
                    update(&mut |c| c.closed_by_upstream = true);
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

/// What a [`TcpClient::run`] saw.
#[derive(Debug, Clone, Default)]
pub struct TcpExchange {
    /// Every byte the client read.
    pub received: Vec<u8>,
    /// The proxy closed (or reset) the connection before the client closed it.
    pub closed_by_proxy: bool,
    /// The TLS handshake failed (the listener refused the client).
    pub refused: bool,
}

/// A TCP client of a [`tcp_listener`].
pub struct TcpClient {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The SNI a TLS client sends (default `localhost`; the server certificate is verified as
    /// `localhost` whatever it is).
    sni: String,
    source_ip: Option<IpAddr>,
    /// How long the client waits for answers after each chunk.
    pub pause: Duration,
}

impl TcpClient {
    pub fn plaintext(addr: SocketAddr) -> Self {
        Self {
            addr,
            tls: None,
            sni: "localhost".to_string(),
            source_ip: None,
            pause: Duration::from_millis(150),
        }
    }

    /// A TLS client trusting the rig's CA, presenting `client_cert` if given (SNI `localhost`
    /// unless [`TcpClient::sni`] says otherwise).
    pub fn tls(addr: SocketAddr, certs: &Certs, client_cert: Option<&ClientCert>) -> Result<Self> {
        Ok(Self {
            tls: Some(crate::client::client_tls_config(certs, client_cert)?),
            ..Self::plaintext(addr)
        })
    }

    pub fn source_ip(mut self, ip: IpAddr) -> Self {
        self.source_ip = Some(ip);
        self
    }

    /// The SNI a TLS client sends.
    pub fn sni(mut self, name: &str) -> Self {
        self.sni = name.to_string();
        self
    }

    /// Connects, writes each chunk (waiting [`TcpClient::pause`] and reading what came back after
    /// each), stops early if the proxy closes, then closes the connection itself.
    pub fn run(&self, chunks: &[Vec<u8>]) -> Result<TcpExchange> {
        let socket = Socket::new(Domain::for_address(self.addr), Type::STREAM, None)?;
        if let Some(ip) = self.source_ip {
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .with_context(|| format!("binding the client to {ip}"))?;
        }
        socket
            .connect_timeout(&self.addr.into(), Duration::from_secs(5))
            .with_context(|| format!("connecting to {}", self.addr))?;
        let mut tcp: TcpStream = socket.into();
        tcp.set_nodelay(true)?;
        tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut ex = TcpExchange::default();
        let mut stream: Box<dyn ReadWrite> = match &self.tls {
            None => Box::new(tcp.try_clone()?),
            Some(config) => {
                let name = ServerName::try_from(self.sni.clone())
                    .with_context(|| format!("SNI {:?}", self.sni))?;
                let mut conn = rustls::ClientConnection::new(config.clone(), name)?;
                tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
                while conn.is_handshaking() {
                    if conn.complete_io(&mut tcp).is_err() {
                        ex.refused = true;
                        return Ok(ex);
                    }
                }
                Box::new(rustls::StreamOwned::new(conn, tcp.try_clone()?))
            }
        };
        tcp.set_read_timeout(Some(Duration::from_millis(20)))?;
        // Let the proxy see the connection before the first byte (a filter may close it).
        self.drain(&mut *stream, &mut ex, self.pause);
        for chunk in chunks {
            if ex.closed_by_proxy {
                break;
            }
            if stream
                .write_all(chunk)
                .and_then(|()| stream.flush())
                .is_err()
            {
                ex.closed_by_proxy = true;
                break;
            }
            self.drain(&mut *stream, &mut ex, self.pause);
        }
        let _ = tcp.shutdown(Shutdown::Both);
        Ok(ex)
    }

    /// Reads for `wait`; `true` when the proxy closed the connection.
    fn drain(&self, stream: &mut dyn ReadWrite, ex: &mut TcpExchange, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 16 * 1024];
        while Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) => {
                    ex.closed_by_proxy = true;
                    return true;
                }
                Ok(n) => ex
                    .received
                    .extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    ex.closed_by_proxy = true;
                    return true;
                }
            }
        }
        false
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
