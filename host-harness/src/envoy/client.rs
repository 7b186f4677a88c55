//! A raw HTTP/1.1 client. It writes the request line and headers byte for byte — no
//! normalization, no header-name case changes, no validation — so tests can send exactly what a
//! hostile client would and observe what Envoy's codec, the filters and the upstream make of it.

use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use socket2::{Domain, Socket, Type};

use crate::envoy::certs::{Certs, ClientCert};
use crate::envoy::echo::RequestHead;
use crate::envoy::http1::{self, BodyFraming};

/// One request, serialized as given.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request-target, written as is (`/a%2Fb#frag`, `//x`, `*`, …).
    pub target: Vec<u8>,
    /// Written first as `host: <authority>` when set.
    pub authority: Option<String>,
    /// Written in order, duplicates kept, names and values unchanged.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Add `connection: close` (the default: one request per connection).
    pub close: bool,
}

impl Request {
    /// A request with authority `example.com` (the scenario default), no body, `connection: close`.
    pub fn new(method: &str, target: impl AsRef<[u8]>) -> Self {
        Self {
            method: method.to_string(),
            target: target.as_ref().to_vec(),
            authority: Some("example.com".to_string()),
            headers: Vec::new(),
            body: Vec::new(),
            close: true,
        }
    }

    /// `GET target`.
    pub fn get(target: impl AsRef<[u8]>) -> Self {
        Self::new("GET", target)
    }

    /// Sets (or with `None`, omits) the `host` header.
    pub fn authority(mut self, authority: Option<&str>) -> Self {
        self.authority = authority.map(str::to_string);
        self
    }

    /// Appends a header (bytes as given, even invalid ones).
    pub fn header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.as_ref().to_vec(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body; `content-length` is added unless a framing header was given.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    /// Whether to add `connection: close`.
    pub fn close(mut self, close: bool) -> Self {
        self.close = close;
        self
    }

    /// The bytes sent on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if let Some(authority) = &self.authority {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(authority.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        let has_framing = self.headers.iter().any(|(n, _)| {
            n.eq_ignore_ascii_case(b"content-length")
                || n.eq_ignore_ascii_case(b"transfer-encoding")
        });
        if !has_framing && (!self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT"))
        {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        if self.close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// A response as the client received it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header names as on the wire, in order, duplicates kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// What the echo upstream saw, when this is its reply.
    pub fn echo(&self) -> Result<RequestHead> {
        RequestHead::from_echo_body(&self.body)
    }
}

impl std::fmt::Debug for Response {
    // The body as text: assertion failures should be readable.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.body_text())
            .finish()
    }
}

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
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(certs.ca_der().to_vec()))
            .context("adding the rig CA to the client's roots")?;
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
        let config = match client_cert {
            Some(cert) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from(cert.cert_der.clone())],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone())),
                )
                .context("loading the client certificate")?,
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            tls: Some(Arc::new(config)),
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
                    conn.complete_io(&mut tcp)
                        .context("TLS handshake with Envoy")?;
                }
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        };
        Ok(Connection {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one request on a new connection and reads the response.
    pub fn send(&self, request: &Request) -> Result<Response> {
        self.connect()?.send(request)
    }
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

    /// Writes arbitrary bytes and reads one response (`head_request`: no body expected).
    pub fn send_raw(&mut self, bytes: &[u8], head_request: bool) -> Result<Response> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes).context("writing the request")?;
        stream.flush()?;
        self.read_response(head_request)
    }

    fn read_response(&mut self, head_request: bool) -> Result<Response> {
        loop {
            let Some(head) = http1::read_head(&mut self.reader)? else {
                bail!("the server closed the connection without a response");
            };
            let mut slots = vec![httparse::EMPTY_HEADER; http1::header_slots(&head)];
            let mut parsed = httparse::Response::new(&mut slots);
            let httparse::Status::Complete(_) = parsed.parse(&head)? else {
                bail!("incomplete response head");
            };
            let status = parsed.code.unwrap_or_default();
            let headers = http1::header_pairs(parsed.headers);
            if (100..200).contains(&status) {
                continue; // interim response: the final one follows
            }
            let framing = if head_request || status == 204 || status == 304 {
                BodyFraming::None
            } else {
                http1::framing(&headers, BodyFraming::UntilClose)?
            };
            let body = http1::read_body(&mut self.reader, framing)?;
            return Ok(Response {
                status,
                headers,
                body,
            });
        }
    }
}

/// A client connection, plain or TLS (also the benchmark rig's).
pub(crate) enum Stream {
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
