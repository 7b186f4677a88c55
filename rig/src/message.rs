//! The HTTP/1.1 messages the rig exchanges: a [`Request`] a client writes byte for byte, the
//! [`Response`] it reads back, and the [`RequestHead`] an upstream received (also the JSON body of
//! the echo upstream's reply). Shared by the client and the upstream, which know nothing of
//! each other.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

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
