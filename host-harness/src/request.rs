//! A request as the client sends it: the input vocabulary of the harness.

use std::net::SocketAddr;

/// The TLS side of the downstream connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// URI SANs of the client certificate, in certificate order; empty without a client cert.
    pub peer_uri_sans: Vec<String>,
    /// DNS SANs of the client certificate.
    pub peer_dns_sans: Vec<String>,
    /// Subject DN of the client certificate (RFC 2253 order), if any.
    pub peer_subject: Option<String>,
    /// SNI the client sent.
    pub sni: Option<String>,
}

impl Tls {
    /// mTLS with a client certificate whose (single) URI SAN is `uri_san`.
    pub fn peer(uri_san: &str) -> Self {
        Tls {
            peer_uri_sans: vec![uri_san.to_string()],
            ..Tls::default()
        }
    }

    /// TLS without a client certificate.
    pub fn server_only() -> Self {
        Tls::default()
    }

    /// Whether a client certificate was presented (Envoy's `connection.mtls`).
    pub fn is_mtls(&self) -> bool {
        !self.peer_uri_sans.is_empty()
            || !self.peer_dns_sans.is_empty()
            || self.peer_subject.is_some()
    }
}

/// A request as the client sends it (before the modelled HCM touches it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Raw request-target (path with query), sent as is.
    pub path: String,
    pub authority: String,
    /// Headers in order; duplicates allowed. Names are lowercased by the codec model.
    pub headers: Vec<(String, String)>,
    /// Request body; empty = no body (headers carry end_of_stream).
    pub body: Vec<u8>,
    /// Request trailers; empty = none.
    pub trailers: Vec<(String, String)>,
    /// `None` = plaintext.
    pub tls: Option<Tls>,
    /// Client address; default 127.0.0.1:40000 + a per-host connection counter.
    pub source: Option<SocketAddr>,
    /// Send to this worker (index) instead of round-robin.
    pub worker: Option<usize>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            authority: "example.com".to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
            tls: None,
            source: None,
            worker: None,
        }
    }
    pub fn get(path: &str) -> Self {
        Request::new("GET", path)
    }
    pub fn post(path: &str) -> Self {
        Request::new("POST", path)
    }
    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = authority.to_string();
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }
    pub fn source(mut self, addr: SocketAddr) -> Self {
        self.source = Some(addr);
        self
    }
    pub fn worker(mut self, index: usize) -> Self {
        self.worker = Some(index);
        self
    }
}
