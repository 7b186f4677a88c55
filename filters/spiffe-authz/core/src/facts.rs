//! What the decision looks at: plain data the adapter reads from the host, and the list of what
//! the configured policies actually need (so the adapter reads nothing else).

use std::net::IpAddr;

use meshward_common::identity::RequestIdentity;
use meshward_common::spiffe::SpiffeId;

/// One request, as far as authorization is concerned. `None` means "not available": for `peer`,
/// `identity` and `sni` that is a normal state (no client cert, no token, no SNI); for the others
/// it means the host could not say, and the decision fails closed if a policy needs it.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts<'a> {
    /// `connection.mtls`: the client presented a certificate the listener verified.
    pub mtls: bool,
    /// The peer's first URI SAN parsed as a SPIFFE ID (`None` if absent or invalid). Only used
    /// when `mtls` is true.
    pub peer: Option<SpiffeId>,
    /// `:method`.
    pub method: Option<&'a str>,
    /// Raw `:path` (request-target, query and all).
    pub path: Option<&'a str>,
    /// `:authority`.
    pub host: Option<&'a str>,
    /// `destination.port`: the local port the request arrived on.
    pub destination_port: Option<u16>,
    /// The direct peer's address (`source.address` without the port).
    pub source_ip: Option<IpAddr>,
    /// Request headers the policies need ([`Needs::headers`]), one entry per header line
    /// (repeated headers stay separate), including every header whose name equals a needed one
    /// only after folding case and `_`/`-` (the core refuses those requests).
    pub headers: &'a [(String, Vec<u8>)],
    /// The verified JWT identity jwt-authn published, if any.
    pub identity: Option<&'a RequestIdentity>,
    /// An identity was published but could not be read: not the same as "no identity" (a DENY
    /// on request principals or claims must not fail open); a policy that needs it denies.
    pub identity_unreadable: bool,
    /// `connection.requested_server_name`.
    pub sni: Option<&'a str>,
}

impl RequestFacts<'_> {
    /// Every value of header `name` (lower-case), in order.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
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
