//! The benchmark's TCP client: one whole connection per call — TCP connect, TLS handshake (rustls,
//! the rig's CA, optionally a client certificate; no session resumption, so every connection pays
//! a full mTLS handshake), a small payload written, its echo read back in full, close — and a
//! slower probe for the sanity checks that tells how a connection ended.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use meshward_rig::{Certs, ClientCert};
use rustls::client::Resumption;
use rustls::pki_types::ServerName;

/// Where and how to connect, and what to send.
#[derive(Clone)]
pub(crate) struct TcpBenchClient {
    addr: SocketAddr,
    /// `None`: plaintext (the upstream measured alone).
    tls: Option<Arc<rustls::ClientConfig>>,
    payload: Arc<Vec<u8>>,
    timeout: Duration,
}

/// How a probed connection went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    /// The TLS handshake failed (the listener refused the client before any filter).
    pub refused_at_handshake: Option<String>,
    /// What came back.
    pub echoed: Vec<u8>,
    pub end: End,
}

/// How a probed connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// The whole payload came back and the connection was still open.
    Open,
    /// Envoy closed it (TLS close_notify or TCP FIN).
    Closed,
    /// Reset, or another error reading or writing.
    Reset(String),
    /// Nothing more came within the timeout and the connection stayed open.
    TimedOut,
}

impl Probe {
    /// The whole payload echoed.
    pub(crate) fn echoed(&self, payload: &[u8]) -> bool {
        self.refused_at_handshake.is_none() && self.echoed == payload
    }

    /// Closed (or reset) by Envoy with no byte echoed.
    pub(crate) fn closed_without_echo(&self) -> bool {
        self.refused_at_handshake.is_none()
            && self.echoed.is_empty()
            && matches!(self.end, End::Closed | End::Reset(_))
    }

    /// One line for the report.
    pub(crate) fn describe(&self, payload_len: usize) -> String {
        if let Some(why) = &self.refused_at_handshake {
            return format!("refused at the TLS handshake ({why})");
        }
        let echoed = match self.echoed.len() {
            0 => "no byte echoed".to_string(),
            n if n == payload_len => "the payload echoed".to_string(),
            n => format!("{n} of {payload_len} bytes echoed"),
        };
        match &self.end {
            End::Open => echoed,
            End::Closed => format!("closed by Envoy, {echoed}"),
            End::Reset(e) => format!("reset ({e}), {echoed}"),
            End::TimedOut => format!("held open, {echoed}"),
        }
    }
}

/// The rig's TLS client configuration (trusting its CA, presenting `client_cert` if given)
/// without session resumption: every connection pays a full handshake, certificates included.
pub(crate) fn tls_config(
    certs: &Certs,
    client_cert: Option<&ClientCert>,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut config = (*meshward_rig::client_tls_config(certs, client_cert)?).clone();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

impl TcpBenchClient {
    pub(crate) fn new(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        payload: Arc<Vec<u8>>,
    ) -> Self {
        Self {
            addr,
            tls,
            payload,
            timeout: Duration::from_secs(10),
        }
    }

    /// Read/write timeout (probes wait less than the load).
    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn tcp(&self) -> Result<TcpStream> {
        let tcp = TcpStream::connect_timeout(&self.addr, self.timeout)
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(self.timeout))?;
        tcp.set_write_timeout(Some(self.timeout))?;
        Ok(tcp)
    }

    fn session(config: &Arc<rustls::ClientConfig>) -> Result<rustls::ClientConnection> {
        let name = ServerName::try_from("localhost")?;
        rustls::ClientConnection::new(Arc::clone(config), name).context("creating the TLS session")
    }

    /// One whole connection; an error if any step fails or the echo is not the payload.
    pub(crate) fn connection(&self) -> Result<()> {
        let mut tcp = self.tcp()?;
        let payload = self.payload.as_slice();
        let mut buf = [0u8; 512];
        let Some(config) = &self.tls else {
            tcp.write_all(payload).context("writing the payload")?;
            return read_echo(&mut tcp, payload, &mut buf);
        };
        let mut tls = Self::session(config)?;
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp)
                .context("TLS handshake with Envoy")?;
        }
        let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
        stream.write_all(payload).context("writing the payload")?;
        stream.flush()?;
        read_echo(&mut stream, payload, &mut buf)?;
        // A clean close: close_notify, then the socket (the FIN) on drop.
        tls.send_close_notify();
        while tls.wants_write() {
            if tls.write_tls(&mut tcp).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Connects (TLS if configured), writes the payload, and reads until the payload came back,
    /// the connection ended, or nothing came for the timeout.
    pub(crate) fn probe(&self) -> Result<Probe> {
        let mut tcp = self.tcp()?;
        let payload = self.payload.as_slice();
        let Some(config) = &self.tls else {
            return Ok(exchange(&mut tcp, payload));
        };
        let mut tls = Self::session(config)?;
        while tls.is_handshaking() {
            if let Err(e) = tls.complete_io(&mut tcp) {
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                    return Err(e).context("TLS handshake with Envoy timed out");
                }
                return Ok(Probe {
                    refused_at_handshake: Some(e.to_string()),
                    echoed: Vec::new(),
                    end: End::Closed,
                });
            }
        }
        let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
        Ok(exchange(&mut stream, payload))
    }
}

/// Reads until `payload.len()` bytes came back and checks them.
fn read_echo(stream: &mut impl Read, payload: &[u8], buf: &mut [u8]) -> Result<()> {
    let mut got = 0;
    while got < payload.len() {
        let Some(rest) = buf.get_mut(got..payload.len()) else {
            bail!("the payload is larger than the read buffer");
        };
        let n = stream.read(rest).context("reading the echo")?;
        if n == 0 {
            bail!(
                "the connection closed after {got} of {} bytes echoed",
                payload.len()
            );
        }
        got += n;
    }
    if buf.get(..payload.len()) != Some(payload) {
        bail!("the echo differs from the payload");
    }
    Ok(())
}

fn exchange(stream: &mut (impl Read + Write), payload: &[u8]) -> Probe {
    let mut probe = Probe {
        refused_at_handshake: None,
        echoed: Vec::new(),
        end: End::Open,
    };
    if let Err(e) = stream.write_all(payload).and_then(|()| stream.flush()) {
        probe.end = End::Reset(format!("writing: {e}"));
        return probe;
    }
    let mut buf = [0u8; 512];
    while probe.echoed.len() < payload.len() {
        match stream.read(&mut buf) {
            Ok(0) => {
                probe.end = End::Closed;
                return probe;
            }
            Ok(n) => probe
                .echoed
                .extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                probe.end = End::TimedOut;
                return probe;
            }
            // A TCP FIN without close_notify: rustls reports it as an unexpected EOF.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                probe.end = End::Closed;
                return probe;
            }
            Err(e) => {
                probe.end = End::Reset(e.to_string());
                return probe;
            }
        }
    }
    probe
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::echo::EchoServer;

    #[test]
    fn a_plaintext_connection_to_the_echo_server_round_trips_and_a_probe_sees_the_echo() {
        let server = EchoServer::start(2).unwrap();
        let payload = Arc::new(b"0123456789abcdef".repeat(4));
        let client = TcpBenchClient::new(server.addr(), None, Arc::clone(&payload))
            .timeout(Duration::from_secs(2));
        for _ in 0..3 {
            client.connection().unwrap();
        }
        let probe = client.probe().unwrap();
        assert!(probe.echoed(&payload), "{probe:?}");
        assert_eq!(probe.describe(payload.len()), "the payload echoed");
    }

    #[test]
    fn probes_tell_a_close_without_echo_from_a_refusal_and_a_hold() {
        let closed = Probe {
            refused_at_handshake: None,
            echoed: Vec::new(),
            end: End::Closed,
        };
        assert!(closed.closed_without_echo());
        assert_eq!(closed.describe(64), "closed by Envoy, no byte echoed");
        let held = Probe {
            end: End::TimedOut,
            ..closed.clone()
        };
        assert!(!held.closed_without_echo());
        let refused = Probe {
            refused_at_handshake: Some("alert".into()),
            ..closed
        };
        assert!(!refused.closed_without_echo());
        assert!(!refused.echoed(b""));
    }
}
