//! The listeners of Istio's mTLS modes ([`EnvoyConfig::transport`]) in the real Envoy 1.40: which
//! callers each takes, that a refused caller gets no HTTP response at all ([`Refused`]), and what
//! the filters see of the connections it takes. The harness's `envoy_model::transport` models
//! exactly these answers.
//!
//! Every test starts its own Envoy. Envoy missing ⇒ `Envoy::start` errors ⇒ the test fails; the
//! probe module missing (scripts/build-wasm.sh) ⇒ the test fails saying so.

use std::net::SocketAddr;

use meshward_rig::{
    default_wasm_dir, repo_root, Certs, Client, ClientCert, EchoUpstream, Envoy, EnvoyConfig,
    MtlsMode, Refused, Request, WasmFilter,
};

const SAN: &str = "spiffe://cluster.local/ns/default/sa/frontend";

/// Envoy with the probe module behind the listener of `mode` (on `port`, 0 = ephemeral).
struct Rig {
    // Field order is drop order: Envoy before its upstream.
    envoy: Envoy,
    upstream: EchoUpstream,
    certs: Certs,
    cert: ClientCert,
}

impl Rig {
    fn start(mode: MtlsMode, port: u16) -> Self {
        let module = default_wasm_dir(&repo_root()).join("meshward_test_probe.wasm");
        assert!(
            module.is_file(),
            "{} missing: run scripts/build-wasm.sh",
            module.display()
        );
        let upstream = EchoUpstream::start().unwrap();
        let certs = Certs::generate().unwrap();
        let cert = certs.client_cert(&[SAN], "frontend").unwrap();
        let config = EnvoyConfig::new(upstream.addr())
            .filter(WasmFilter::new("probe", &module, ""))
            .transport(mode, &certs, port);
        let envoy = Envoy::start(&config).unwrap();
        Rig {
            envoy,
            upstream,
            certs,
            cert,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.envoy.transport_addr().expect("the transport listener")
    }

    fn plaintext(&self) -> Client {
        Client::plaintext(self.addr())
    }

    fn tls_without_cert(&self) -> Client {
        Client::tls(self.addr(), &self.certs, None).unwrap()
    }

    fn mtls(&self) -> Client {
        Client::tls(self.addr(), &self.certs, Some(&self.cert)).unwrap()
    }

    /// What the probe reports for `property`, or the refusal.
    fn property(&self, client: &Client, property: &str) -> Result<String, Refused> {
        let request = Request::get("/t").header("x-probe-property", property);
        let response = client.send_or_refused(&request).unwrap()?;
        assert_eq!(response.status, 200, "{property}: {response:?}");
        let seen = response.echo().unwrap();
        Ok(seen.header("x-probe-property-value").unwrap().to_string())
    }

    /// Sends to `client` and requires a refusal that neither the filters nor the upstream saw.
    fn assert_refused(&self, client: &Client, who: &str) -> Refused {
        let before = self.upstream.received().len();
        let refused = match client.send_or_refused(&Request::get("/refused")).unwrap() {
            Err(refused) => refused,
            Ok(response) => panic!("{who}: expected a refused connection, got {response:?}"),
        };
        assert_eq!(self.upstream.received().len(), before, "{who}");
        println!("{who}: {refused}");
        refused
    }
}

/// The accepted mTLS caller: the filters see `connection.mtls` and the URI SAN.
fn assert_mtls_seen(rig: &Rig) {
    let mtls = rig.mtls();
    assert_eq!(rig.property(&mtls, "connection.mtls").unwrap(), "hex:01");
    assert_eq!(
        rig.property(&mtls, "connection.uri_san_peer_certificate")
            .unwrap(),
        SAN
    );
}

#[test]
fn strict_takes_mtls_only() {
    let rig = Rig::start(MtlsMode::Strict, 0);
    let plain = rig.assert_refused(&rig.plaintext(), "plaintext");
    assert!(!plain.reason.is_empty());
    rig.assert_refused(&rig.tls_without_cert(), "TLS without a certificate");
    assert_mtls_seen(&rig);
    let ssl = |name: &str| rig.envoy.stats().unwrap()[&format!("listener.transport.ssl.{name}")];
    assert_eq!(ssl("fail_verify_no_cert"), 1);
}

#[test]
fn permissive_takes_plaintext_and_mtls_but_not_tls_without_a_cert() {
    let rig = Rig::start(MtlsMode::Permissive, 0);
    let plain = rig.plaintext();
    // The plaintext chain: no TLS facts at all.
    assert_eq!(rig.property(&plain, "connection.mtls").unwrap(), "hex:00");
    assert_eq!(
        rig.property(&plain, "connection.uri_san_peer_certificate")
            .unwrap(),
        "<none>"
    );
    rig.assert_refused(&rig.tls_without_cert(), "TLS without a certificate");
    assert_mtls_seen(&rig);
}

#[test]
fn disable_takes_plaintext_only() {
    let rig = Rig::start(MtlsMode::Disable, 0);
    assert_eq!(
        rig.property(&rig.plaintext(), "connection.mtls").unwrap(),
        "hex:00"
    );
    rig.assert_refused(&rig.tls_without_cert(), "TLS without a certificate");
    rig.assert_refused(&rig.mtls(), "mTLS");
}

#[test]
fn a_fixed_port_is_bound_on_a_random_loopback_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Two Envoys with the same fixed port at once: each on its own loopback address.
    let a = Rig::start(MtlsMode::Permissive, port);
    let b = Rig::start(MtlsMode::Permissive, port);
    for rig in [&a, &b] {
        let addr = rig.addr();
        assert_eq!(addr.port(), port);
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(
            rig.property(&rig.plaintext(), "destination.port").unwrap(),
            format!("hex:{}", hex_le(u64::from(port)))
        );
    }
    assert_ne!(a.addr(), b.addr());
}

/// Envoy's encoding of an integer property: 8 bytes little-endian, as hex.
fn hex_le(n: u64) -> String {
    n.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect()
}
