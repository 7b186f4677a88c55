//! spiffe-authz-tcp, the network filter (issue #17): its scenario files under
//! tests/scenarios/spiffe-authz-tcp/ run in the harness and in real Envoy 1.40 (a `tcp_proxy`
//! listener, mTLS with a `tls_inspector`), and again against the Envoy network RBAC filters
//! istiod would render for the same policies: meshward and native RBAC must agree case by case,
//! except on the cases marked `stricterThanIstio`, where meshward must refuse what native lets
//! through. Envoy missing ⇒ failure, never a skip.

use meshward_scenario::default_wasm_dir;
use meshward_tests::{parity_suite, repo};

/// One test, not two: the files listen on a fixed port (`destination.yaml`), and two Envoys on
/// one port (SO_REUSEPORT) would take each other's connections.
#[test]
fn spiffe_authz_tcp_agrees_in_harness_and_envoy_then_with_istios_native_rbac() {
    let passed = parity_suite("spiffe-authz-tcp");
    assert!(passed >= 45, "only {passed} spiffe-authz-tcp cases");
    native_differential();
}

fn native_differential() {
    let root = repo();
    let dir = root.join("tests/scenarios/spiffe-authz-tcp");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let wasm_dir = default_wasm_dir(&root);
    let (mut passed, mut failed, mut text) = (0, 0, String::new());
    for file in &files {
        let report = meshward_scenario::native::run_file(file, &wasm_dir, true);
        passed += report.passed;
        failed += report.failed;
        text.push_str(&report.text);
    }
    println!("{text}\nnative differential: {passed} agree, {failed} differ");
    assert_eq!(failed, 0, "meshward and native RBAC differ:\n{text}");
    assert!(passed >= 45, "only {passed} cases compared");
    // Both verdicts occur, and the documented differences were seen as documented.
    assert!(text.contains("(both allowed)") && text.contains("(both refused)"));
    let stricter = text.matches("stricter on purpose").count();
    assert!(
        stricter >= 3,
        "only {stricter} stricterThanIstio cases held:\n{text}"
    );
}

/// Istio-native scenarios on TCP ports (`workload.tcpPorts`): the resources compile to
/// spiffe-authz-tcp with each port's PeerAuthentication mode, and every case names who decided,
/// the same in the harness and in Envoy; then native Istio (the network RBAC istiod renders from
/// the same resources, on the same listeners) agrees connection by connection. One test: the
/// listeners take fixed ports.
#[test]
fn mesh_scenarios_on_tcp_ports_agree_in_harness_and_envoy_and_with_native_istio() {
    let passed = parity_suite("mesh-tcp");
    assert!(passed >= 10, "only {passed} mesh TCP cases");
    let root = repo();
    let file = root.join("tests/scenarios/mesh-tcp/postgres.yaml");
    let report = meshward_scenario::mesh::run_native_file(&file, &default_wasm_dir(&root), true);
    println!("{}", report.text);
    assert_eq!(
        report.failed, 0,
        "meshward and native Istio differ:\n{}",
        report.text
    );
    assert!(report.passed >= 10, "{}", report.text);
    assert!(report.text.contains("(both allowed)") && report.text.contains("(both refused)"));
}

/// What an operator sees in the proxy log: at configure time, a warning per rule that reads
/// HTTP-only fields (what it becomes on TCP); per refused connection, one line naming the
/// policy, the peer and the source address. The refused connection's bytes never reach the
/// upstream.
#[test]
fn logs_name_the_policy_and_the_rules_tcp_cuts_down() {
    use meshward_harness::{ConnectionSpec, FilterSpec, Host, Tls};
    let config = r#"{"policies": [
        {"name": "deny-legacy", "action": "DENY",
         "rules": [{"from": [{"source": {"namespaces": ["legacy"]}}], "to": [{"operation": {"paths": ["/admin"]}}]}]},
        {"name": "allow-get", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]},
        {"name": "allow-app", "rules": [{"from": [{"source": {"namespaces": ["app"]}}]}]}
    ]}"#;
    let host = Host::builder()
        .filter(
            FilterSpec::from_file(meshward_tests::wasm("spiffe_authz_tcp"))
                .unwrap()
                .name("spiffe-authz-tcp")
                .config(config.as_bytes().to_vec()),
        )
        .build()
        .unwrap();
    let startup: Vec<String> = host.logs().into_iter().map(|l| l.message).collect();
    let joined = startup.join("\n");
    assert!(
        joined
            .contains("policy `deny-legacy` rules[0] (DENY) reads HTTP-only to[0].operation.paths")
            && joined.contains("widens"),
        "{joined}"
    );
    assert!(
        joined.contains(
            "policy `allow-get` rules[0] (ALLOW) reads HTTP-only to[0].operation.methods"
        ) && joined.contains("never matches"),
        "{joined}"
    );
    let spec = ConnectionSpec {
        tls: Some(Tls::peer("spiffe://cluster.local/ns/legacy/sa/batch")),
        source: Some("127.0.0.5:41000".parse().unwrap()),
        worker: None,
    };
    let mut conn = host.connect(&spec).unwrap();
    conn.send(b"SELECT * FROM accounts;").unwrap();
    let outcome = conn.close().unwrap();
    assert!(outcome.upstream_received.is_empty() && outcome.closed_by_proxy);
    let refusal: Vec<&str> = outcome
        .logs
        .iter()
        .map(|l| l.message.as_str())
        .filter(|m| m.contains("denied"))
        .collect();
    assert_eq!(
        refusal,
        vec![
            "spiffe-authz-tcp: denied by DENY policy `deny-legacy`; \
             peer=\"spiffe://cluster.local/ns/legacy/sa/batch\" source=127.0.0.5"
        ]
    );
}
