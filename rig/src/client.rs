//! A raw HTTP/1.1 client. It writes the request line and headers byte for byte — no
//! normalization, no header-name case changes, no validation — so tests can send exactly what a
//! hostile client would and observe what Envoy's codec, the filters and the upstream make of it.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use socket2::{Domain, Socket, Type};

use crate::certs::{Certs, ClientCert};
use crate::http1;
use crate::message::{Request, Response};

/// Where and how to connect: plaintext or TLS (server name `localhost`, trusting only the rig's
/// CA, optionally presenting a client certificate), from an optional loopback source IP.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    source_ip: Option<IpAddr>,
    timeout: Duration,
}

impl Client {
    /// A plaintext client of `addr`.
    pub fn plaintext(addr: SocketAddr) -> Self {
        Self {
            addr,
            tls: None,
            source_ip: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// A TLS client of `addr` that trusts `certs`' CA and presents `client_cert` if given.
    pub fn tls(addr: SocketAddr, certs: &Certs, client_cert: Option<&ClientCert>) -> Result<Self> {
        Ok(Self {
            tls: Some(client_tls_config(certs, client_cert)?),
            ..Self::plaintext(addr)
        })
    }

    /// Connects from this local IP (e.g. `127.0.0.2`, so Envoy sees another `source.address`).
    pub fn source_ip(mut self, ip: IpAddr) -> Self {
        self.source_ip = Some(ip);
        self
    }

    /// Connect/read/write timeout (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Opens a connection (and completes the TLS handshake, if any).
    pub fn connect(&self) -> Result<Connection> {
        match self.connect_or_refused()? {
            Ok(connection) => Ok(connection),
            Err(refused) => Err(anyhow::Error::new(refused).context("TLS handshake with Envoy")),
        }
    }

    /// Sends one request on a new connection and reads the response.
    pub fn send(&self, request: &Request) -> Result<Response> {
        self.connect()?.send(request)
    }

    /// [`Client::send`] that tells a listener refusing the connection (TLS handshake failure,
    /// reset or close before any HTTP response, bytes that are not HTTP) apart from other errors
    /// (nothing listening, a timeout, a malformed HTTP response), which stay errors.
    pub fn send_or_refused(&self, request: &Request) -> Result<Result<Response, Refused>> {
        match self.connect_or_refused()? {
            Ok(mut connection) => connection.send_or_refused(request),
            Err(refused) => Ok(Err(refused)),
        }
    }

    /// Opens a connection; a failed TLS handshake is a refusal, a failed TCP connect an error.
    fn connect_or_refused(&self) -> Result<Result<Connection, Refused>> {
        let domain = Domain::for_address(self.addr);
        let socket = Socket::new(domain, Type::STREAM, None).context("creating a socket")?;
        if let Some(ip) = self.source_ip {
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .with_context(|| format!("binding the client to {ip}"))?;
        }
        socket
            .connect_timeout(&self.addr.into(), self.timeout)
            .with_context(|| format!("connecting to {}", self.addr))?;
        let tcp: TcpStream = socket.into();
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(self.timeout))?;
        tcp.set_write_timeout(Some(self.timeout))?;
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = ServerName::try_from("localhost")?;
                let mut conn = rustls::ClientConnection::new(Arc::clone(config), name)
                    .context("creating the TLS session")?;
                let mut tcp = tcp;
                while conn.is_handshaking() {
                    if let Err(e) = conn.complete_io(&mut tcp) {
                        if is_timeout(&e) {
                            return Err(e).context("TLS handshake with Envoy");
                        }
                        return Ok(Err(Refused::new(format!("TLS handshake failed: {e}"))));
                    }
                }
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        };
        Ok(Ok(Connection {
            reader: BufReader::new(stream),
        }))
    }
}

/// The listener refused the connection: no HTTP response came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What the client saw (the handshake error, the reset, the bytes that were not HTTP).
    pub reason: String,
}

impl Refused {
    fn new(reason: String) -> Self {
        Self { reason }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection refused by the listener: {}", self.reason)
    }
}

impl std::error::Error for Refused {}

/// A timeout is the client giving up, not the listener refusing.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

/// One open connection; requests on it are sent one after the other (keep-alive).
pub struct Connection {
    reader: BufReader<Stream>,
}

impl Connection {
    /// Writes `request` and reads its response.
    pub fn send(&mut self, request: &Request) -> Result<Response> {
        self.send_raw(&request.to_bytes(), request.method == "HEAD")
    }

    /// [`Connection::send`] that tells a refused connection apart (see [`Client::send_or_refused`]).
    /// With TLS 1.3 a listener that requires a client certificate refuses only after the client's
    /// handshake is done, so the refusal comes as the answer to the request.
    pub fn send_or_refused(&mut self, request: &Request) -> Result<Result<Response, Refused>> {
        let stream = self.reader.get_mut();
        let written = stream
            .write_all(&request.to_bytes())
            .and_then(|()| stream.flush());
        if let Err(e) = written {
            if is_timeout(&e) {
                return Err(e).context("writing the request");
            }
            return Ok(Err(Refused::new(format!("writing the request: {e}"))));
        }
        // Look at the first bytes before parsing: an HTTP response starts with `HTTP/`.
        let first = match self.reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if is_timeout(&e) => return Err(e).context("waiting for a response"),
            Err(e) => return Ok(Err(Refused::new(format!("before any response: {e}")))),
        };
        if first.is_empty() {
            return Ok(Err(Refused::new("closed before any response".to_string())));
        }
        let prefix = first.len().min(5);
        if first.get(..prefix) != b"HTTP/".get(..prefix) {
            let shown: Vec<u8> = first.iter().take(16).copied().collect();
            return Ok(Err(Refused::new(format!(
                "answered with bytes that are not HTTP: {shown:02x?}"
            ))));
        }
        http1::read_response(&mut self.reader, request.method == "HEAD").map(Ok)
    }

    /// Writes arbitrary bytes and reads one response (`head_request`: no body expected).
    pub fn send_raw(&mut self, bytes: &[u8], head_request: bool) -> Result<Response> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes).context("writing the request")?;
        stream.flush()?;
        http1::read_response(&mut self.reader, head_request)
    }
}

/// A client connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A TLS client configuration that trusts `certs`' CA and presents `client_cert` if given (the
/// HTTP client and the TCP client alike).
pub fn client_tls_config(
    certs: &Certs,
    client_cert: Option<&ClientCert>,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(certs.ca_der().to_vec()))
        .context("adding the rig CA to the client's roots")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .context("the rig CA's verifier")?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AsLocalhost(webpki)));
    let config = match client_cert {
        Some(cert) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(cert.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone())),
            )
            .context("loading the client certificate")?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Verifies the rig's server certificate (issued for `localhost`) as `localhost`, whatever SNI
/// the client sends: a TCP scenario may send any SNI (`connection.sni`) to a listener that has
/// one certificate. The chain, the signatures and the validity are checked as usual.
#[derive(Debug)]
struct AsLocalhost(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AsLocalhost {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let localhost = ServerName::DnsName(
            rustls::pki_types::DnsName::try_from("localhost")
                .map_err(|e| rustls::Error::General(e.to_string()))?,
        );
        self.0
            .verify_server_cert(end_entity, intermediates, &localhost, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
