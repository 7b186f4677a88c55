//! What the decision looks at: the [`RequestFacts`] trait (the adapter's reads from the host, or
//! [`PlainFacts`]), and the list of what the configured policies actually need (so the adapter
//! reads nothing else).

use std::net::IpAddr;

use meshward_common::identity::RequestIdentity;
use meshward_common::spiffe::SpiffeId;

/// One request, as far as authorization is concerned: what [`crate::decide`] reads. Implemented
/// over the host by the adapter (reading only what [`Needs`] lists) and over plain data by
/// [`PlainFacts`] in native tests.
///
/// `None` means "not available": for `peer`, `identity` and `sni` that is a normal state (no
/// client cert, no token, no SNI); for the others it means the host could not say, and the
/// decision fails closed if a policy needs it.
pub trait RequestFacts {
    /// `connection.mtls`: the client presented a certificate the listener verified.
    fn mtls(&self) -> bool;
    /// The peer's first URI SAN parsed as a SPIFFE ID (`None` if absent or invalid). Only used
    /// when `mtls` is true.
    fn peer(&self) -> Option<&SpiffeId>;
    /// `:method`.
    fn method(&self) -> Option<&str>;
    /// Raw `:path` (request-target, query and all).
    fn path(&self) -> Option<&str>;
    /// `:authority`.
    fn host(&self) -> Option<&str>;
    /// `destination.port`: the local port the request arrived on.
    fn destination_port(&self) -> Option<u16>;
    /// The direct peer's address (`source.address` without the port).
    fn source_ip(&self) -> Option<IpAddr>;
    /// The local address the connection arrived on (`destination.address` without the port).
    fn destination_ip(&self) -> Option<IpAddr>;
    /// Request headers the policies need ([`Needs::headers`]), one entry per header line
    /// (repeated headers stay separate), including every header whose name equals a needed one
    /// only after folding case and `_`/`-` (the core refuses those requests).
    fn headers(&self) -> &[(String, Vec<u8>)];
    /// The verified JWT identity jwt-authn published, if any.
    fn identity(&self) -> Option<&RequestIdentity>;
    /// An identity was published but could not be read: not the same as "no identity" (a DENY
    /// on request principals or claims must not fail open); a policy that needs it denies.
    fn identity_unreadable(&self) -> bool;
    /// `connection.requested_server_name`.
    fn sni(&self) -> Option<&str>;
}

impl dyn RequestFacts + '_ {
    /// Every value of header `name` (lower-case), in order.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.headers()
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// [`RequestFacts`] as plain data (native tests, fuzzing); each field is the trait's method of
/// the same name.
#[derive(Debug, Clone, Default)]
pub struct PlainFacts<'a> {
    pub mtls: bool,
    pub peer: Option<SpiffeId>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub host: Option<&'a str>,
    pub destination_port: Option<u16>,
    pub source_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub headers: &'a [(String, Vec<u8>)],
    pub identity: Option<&'a RequestIdentity>,
    pub identity_unreadable: bool,
    pub sni: Option<&'a str>,
}

impl RequestFacts for PlainFacts<'_> {
    fn mtls(&self) -> bool {
        self.mtls
    }
    fn peer(&self) -> Option<&SpiffeId> {
        self.peer.as_ref()
    }
    fn method(&self) -> Option<&str> {
        self.method
    }
    fn path(&self) -> Option<&str> {
        self.path
    }
    fn host(&self) -> Option<&str> {
        self.host
    }
    fn destination_port(&self) -> Option<u16> {
        self.destination_port
    }
    fn source_ip(&self) -> Option<IpAddr> {
        self.source_ip
    }
    fn destination_ip(&self) -> Option<IpAddr> {
        self.destination_ip
    }
    fn headers(&self) -> &[(String, Vec<u8>)] {
        self.headers
    }
    fn identity(&self) -> Option<&RequestIdentity> {
        self.identity
    }
    fn identity_unreadable(&self) -> bool {
        self.identity_unreadable
    }
    fn sni(&self) -> Option<&str> {
        self.sni
    }
}

/// What the compiled policies read. Computed once at configure time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// The peer certificate (`connection.mtls`, `connection.uri_san_peer_certificate`).
    pub peer: bool,
    pub method: bool,
    pub path: bool,
    pub host: bool,
    pub destination_port: bool,
    /// `source.address`.
    pub source_ip: bool,
    /// `destination.address`.
    pub destination_ip: bool,
    /// The identity jwt-authn publishes.
    pub identity: bool,
    pub sni: bool,
    /// Lower-case names of the request headers to read (`x-forwarded-for` when the remote address
    /// comes from it).
    pub headers: Vec<String>,
    /// Whether a policy looks at the remote (original client) address.
    pub remote_ip: bool,
}

impl Needs {
    pub(crate) fn header(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        if !self.headers.contains(&name) {
            self.headers.push(name);
        }
    }
}
