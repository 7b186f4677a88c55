//! Which downstream connections a listener takes: the TLS side of Envoy's listener, as Istio's
//! PeerAuthentication configures it per port. A refused caller never gets to the HTTP codec: the
//! handshake fails or the connection is closed, so there is no HTTP status at all.
//!
//! Observed in Envoy 1.40 by the rig's tests (`rig/tests/transport.rs`):
//! - STRICT is a listener whose only filter chain has a TLS transport socket with
//!   `require_client_certificate: true`: a plaintext caller's bytes are not a TLS ClientHello
//!   (the connection is closed), and a TLS caller without a certificate fails the handshake.
//! - PERMISSIVE is Istio's pair of filter chains behind the `tls_inspector`: plaintext goes to a
//!   `raw_buffer` chain (no TLS facts), TLS to a chain that requires a client certificate — so TLS
//!   without one is refused, as on STRICT.
//! - DISABLE is a plaintext listener: a TLS ClientHello is not HTTP, and the caller that insists
//!   on TLS never completes a handshake.

use crate::request::Tls;

/// The TLS modes of the modelled listener (Istio PeerAuthentication `mtls.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DownstreamTransport {
    /// Plaintext, TLS and mTLS all accepted (meshward's historical listener pair: a plaintext one
    /// and a TLS one that asks for, but does not require, a client certificate).
    #[default]
    Any,
    /// STRICT: mTLS only.
    MutualTls,
    /// PERMISSIVE: plaintext or mTLS; TLS without a client certificate is refused.
    Permissive,
    /// DISABLE: plaintext only.
    Plaintext,
}

/// The kind of caller a request's connection makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Plaintext,
    TlsWithoutCert,
    MutualTls,
}

impl Caller {
    fn of(tls: Option<&Tls>) -> Self {
        match tls {
            None => Caller::Plaintext,
            Some(t) if t.is_mtls() => Caller::MutualTls,
            Some(_) => Caller::TlsWithoutCert,
        }
    }
}

/// Whether a listener in `mode` takes a connection with these TLS facts; `Err` holds why not.
pub(crate) fn check_transport(mode: DownstreamTransport, tls: Option<&Tls>) -> Result<(), String> {
    use Caller as C;
    use DownstreamTransport as M;
    let refusal = match (mode, Caller::of(tls)) {
        (M::Any, _)
        | (M::MutualTls, C::MutualTls)
        | (M::Permissive, C::Plaintext | C::MutualTls)
        | (M::Plaintext, C::Plaintext) => return Ok(()),
        (M::MutualTls, C::Plaintext) => {
            "plaintext caller on a listener that requires mTLS (STRICT)"
        }
        (M::MutualTls, C::TlsWithoutCert) => {
            "TLS caller without a client certificate on a listener that requires mTLS (STRICT)"
        }
        (M::Permissive, C::TlsWithoutCert) => {
            "TLS caller without a client certificate on a PERMISSIVE listener (its TLS chain requires one)"
        }
        (M::Plaintext, C::TlsWithoutCert | C::MutualTls) => {
            "TLS caller on a listener that takes plaintext only (DISABLE)"
        }
    };
    Err(refusal.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callers() -> [(&'static str, Option<Tls>); 3] {
        [
            ("plaintext", None),
            ("tls", Some(Tls::server_only())),
            ("mtls", Some(Tls::peer("spiffe://cluster.local/ns/a/sa/b"))),
        ]
    }

    /// Which callers `mode` accepts, in the order of `callers()`.
    fn accepted(mode: DownstreamTransport) -> Vec<&'static str> {
        callers()
            .into_iter()
            .filter(|(_, tls)| check_transport(mode, tls.as_ref()).is_ok())
            .map(|(name, _)| name)
            .collect()
    }

    #[test]
    fn any_takes_every_caller() {
        assert_eq!(
            accepted(DownstreamTransport::Any),
            ["plaintext", "tls", "mtls"]
        );
        assert_eq!(DownstreamTransport::default(), DownstreamTransport::Any);
    }

    #[test]
    fn strict_takes_mtls_only() {
        let mode = DownstreamTransport::MutualTls;
        assert_eq!(accepted(mode), ["mtls"]);
        let plain = check_transport(mode, None).unwrap_err();
        assert!(
            plain.contains("plaintext") && plain.contains("STRICT"),
            "{plain}"
        );
        let no_cert = check_transport(mode, Some(&Tls::server_only())).unwrap_err();
        assert!(
            no_cert.contains("without a client certificate"),
            "{no_cert}"
        );
    }

    #[test]
    fn permissive_takes_plaintext_and_mtls_but_not_tls_without_a_cert() {
        let mode = DownstreamTransport::Permissive;
        assert_eq!(accepted(mode), ["plaintext", "mtls"]);
        let no_cert = check_transport(mode, Some(&Tls::server_only())).unwrap_err();
        assert!(no_cert.contains("PERMISSIVE"), "{no_cert}");
    }

    #[test]
    fn disable_takes_plaintext_only() {
        let mode = DownstreamTransport::Plaintext;
        assert_eq!(accepted(mode), ["plaintext"]);
        for (name, tls) in callers().into_iter().skip(1) {
            let why = check_transport(mode, tls.as_ref()).unwrap_err();
            assert!(why.contains("DISABLE"), "{name}: {why}");
        }
    }

    #[test]
    fn a_certificate_without_uri_san_is_still_mtls() {
        // Envoy's `connection.mtls` is about a presented certificate, not about its SANs.
        let cert = Tls {
            peer_subject: Some("CN=x".to_string()),
            ..Tls::default()
        };
        assert!(check_transport(DownstreamTransport::MutualTls, Some(&cert)).is_ok());
    }
}
