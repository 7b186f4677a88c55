//! Evaluation order, every field, and config errors, through the public API.

use meshward_common::identity::RequestIdentity;
use meshward_common::path::PathError;
use meshward_common::spiffe::SpiffeId;
use serde_json::{json, Value};

use crate::{decide, Config, DenyReason, PlainFacts};

fn compile(v: Value) -> Config {
    Config::parse(v.to_string().as_bytes()).unwrap()
}

fn config_error(v: Value) -> meshward_common::ConfigError {
    Config::parse(v.to_string().as_bytes()).unwrap_err()
}

const FRONTEND: &str = "spiffe://cluster.local/ns/default/sa/frontend";

/// A GET / over mTLS from `FRONTEND` to example.com:8080 from 10.0.0.1.
fn facts<'a>(headers: &'a [(String, Vec<u8>)]) -> PlainFacts<'a> {
    PlainFacts {
        mtls: true,
        peer: Some(SpiffeId::parse(FRONTEND).unwrap()),
        method: Some("GET"),
        path: Some("/"),
        host: Some("example.com"),
        destination_port: Some(8080),
        source_ip: Some("10.0.0.1".parse().unwrap()),
        destination_ip: Some("10.0.0.9".parse().unwrap()),
        headers,
        identity: None,
        identity_unreadable: false,
        sni: None,
    }
}

fn allowed(p: &Config, f: &PlainFacts<'_>) -> bool {
    decide(p, f).allowed
}

fn one_rule(action: &str, rule: Value) -> Config {
    compile(json!({"policies": [{"name": "p", "action": action, "rules": [rule]}]}))
}

/// An ALLOW policy with one rule; `allowed` then says whether the rule matched.
fn allow(rule: Value) -> Config {
    one_rule("ALLOW", rule)
}

#[test]
fn evaluation_order_deny_then_allow() {
    let p = compile(json!({"policies": [
        {"name": "audit-all", "action": "AUDIT", "rules": [{}]},
        {"name": "allow-get", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]},
        {"name": "deny-admin", "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]},
    ]}));
    let h = [];
    let mut f = facts(&h);
    let d = decide(&p, &f);
    assert!(d.allowed);
    assert_eq!(d.matched_policy, Some(1));
    assert_eq!(d.audit_matched, vec![0]);

    f.path = Some("/admin");
    let d = decide(&p, &f);
    assert!(!d.allowed);
    assert_eq!(d.deny, Some(DenyReason::DenyPolicy(2)));
    assert_eq!(d.status(), 403);
    assert_eq!(p.policy_name(2), "deny-admin");
    assert!(p.describe(&d).contains("deny-admin"));
    assert_eq!(
        d.audit_matched,
        vec![0],
        "AUDIT is evaluated even when DENY decides"
    );

    f.path = Some("/x");
    f.method = Some("POST");
    let d = decide(&p, &f);
    assert_eq!(d.deny, Some(DenyReason::NoAllowMatched));
    assert!(p.describe(&d).contains("no ALLOW policy matched"));
}

#[test]
fn no_allow_policies_means_allow_and_audit_never_decides() {
    let h = [];
    let f = facts(&h);
    assert!(allowed(&compile(json!({})), &f));
    assert!(allowed(
        &compile(json!({"policies": [{"name": "a", "action": "AUDIT", "rules": [{}]}]})),
        &f
    ));
    let deny_nothing = compile(
        json!({"policies": [{"name": "d", "action": "DENY", "rules": [
        {"to": [{"operation": {"methods": ["DELETE"]}}]}]}]}),
    );
    assert!(allowed(&deny_nothing, &f));
    // AUDIT alongside an ALLOW that does not match: still denied.
    let p = compile(json!({"policies": [
        {"name": "a", "action": "AUDIT", "rules": [{}]},
        {"name": "b", "rules": [{"to": [{"operation": {"methods": ["PUT"]}}]}]}]}));
    assert!(!allowed(&p, &f));
}

#[test]
fn empty_rules_match_nothing_and_empty_rule_matches_everything() {
    let h = [];
    let f = facts(&h);
    assert!(!allowed(
        &compile(json!({"policies": [{"name": "nothing"}]})),
        &f
    ));
    assert!(!allowed(
        &compile(json!({"policies": [{"name": "nothing", "rules": []}]})),
        &f
    ));
    assert!(allowed(
        &compile(json!({"policies": [{"name": "all", "rules": [{}]}]})),
        &f
    ));
    // A DENY with an empty rule denies everything.
    assert!(!allowed(&one_rule("DENY", json!({})), &f));
    // A DENY with no rules denies nothing.
    assert!(allowed(
        &compile(json!({"policies": [{"name": "d", "action": "DENY"}]})),
        &f
    ));
}

#[test]
fn fields_and_entries_or_and_not() {
    let h = [];
    let mut f = facts(&h);
    // Fields AND.
    let p = allow(json!({"to": [{"operation": {"methods": ["GET"], "paths": ["/a"]}}]}));
    f.path = Some("/a");
    assert!(allowed(&p, &f));
    f.method = Some("POST");
    assert!(!allowed(&p, &f));
    // List entries OR (values within a field, and `to` entries).
    let p = allow(
        json!({"to": [{"operation": {"methods": ["PUT"]}}, {"operation": {"methods": ["POST"]}}]}),
    );
    assert!(allowed(&p, &f));
    let p = allow(json!({"to": [{"operation": {"methods": ["PUT", "POST"]}}]}));
    assert!(allowed(&p, &f));
    // from AND to AND when.
    let p = allow(json!({
        "from": [{"source": {"namespaces": ["default"]}}],
        "to": [{"operation": {"methods": ["POST"]}}],
        "when": [{"key": "destination.port", "values": ["8080"]}, {"key": "source.ip", "values": ["10.0.0.0/8"]}]
    }));
    assert!(allowed(&p, &f));
    f.destination_port = Some(9090);
    assert!(!allowed(&p, &f));
    // not* negates, and combines with the positive form.
    let p = allow(json!({"to": [{"operation": {"methods": ["*"], "notMethods": ["DELETE"]}}]}));
    assert!(allowed(&p, &f));
    f.method = Some("DELETE");
    assert!(!allowed(&p, &f));
}

#[test]
fn principals_and_namespaces() {
    let h = [];
    let mut f = facts(&h);
    let src = |s: Value| allow(json!({"from": [{"source": s}]}));
    assert!(allowed(
        &src(json!({"principals": ["cluster.local/ns/default/sa/frontend"]})),
        &f
    ));
    assert!(allowed(
        &src(json!({"principals": ["cluster.local/ns/default/*"]})),
        &f
    ));
    assert!(allowed(&src(json!({"principals": ["*/sa/frontend"]})), &f));
    assert!(allowed(&src(json!({"principals": ["*"]})), &f));
    assert!(!allowed(
        &src(json!({"principals": ["cluster.local/ns/default/sa/backend"]})),
        &f
    ));
    assert!(!allowed(
        &src(json!({"notPrincipals": ["cluster.local/ns/default/sa/frontend"]})),
        &f
    ));
    assert!(allowed(
        &src(json!({"notPrincipals": ["cluster.local/ns/ops/*"]})),
        &f
    ));
    assert!(allowed(&src(json!({"namespaces": ["default"]})), &f));
    assert!(allowed(&src(json!({"namespaces": ["def*"]})), &f));
    assert!(!allowed(&src(json!({"namespaces": ["ops"]})), &f));
    assert!(!allowed(&src(json!({"notNamespaces": ["default"]})), &f));
    assert!(allowed(
        &src(json!({"notNamespaces": ["ops", "*-system"]})),
        &f
    ));

    // A peer without an Istio-shaped path has no namespace.
    f.peer = Some(SpiffeId::parse("spiffe://cluster.local/workload").unwrap());
    assert!(!allowed(&src(json!({"namespaces": ["*"]})), &f));
    assert!(allowed(&src(json!({"notNamespaces": ["*"]})), &f));
}

#[test]
fn require_mtls_denies_before_policies() {
    let h = [];
    let p = compile(json!({"policies": [{"name": "all", "rules": [{}]}]}));
    let mut f = facts(&h);
    f.mtls = false;
    let d = decide(&p, &f);
    assert_eq!(d.deny, Some(DenyReason::NoVerifiedPeer));
    assert_eq!(d.matched_policy, None);
    let mut f = facts(&h);
    f.peer = None; // no URI SAN, or not a valid SPIFFE ID
    assert_eq!(decide(&p, &f).deny, Some(DenyReason::NoVerifiedPeer));
    // Even with no policies at all.
    assert!(!allowed(&compile(json!({})), &f));
    // A peer without mTLS is not a peer (the adapter should not produce it; the core ignores it).
    let mut f = facts(&h);
    f.mtls = false;
    let open = compile(json!({"requireMtls": false, "policies": [
        {"name": "p", "rules": [{"from": [{"source": {"principals": ["*"]}}]}]}]}));
    assert!(!allowed(&open, &f));
    let not_p = compile(json!({"requireMtls": false, "policies": [
        {"name": "p", "rules": [{"from": [{"source": {"notPrincipals": ["cluster.local/ns/ops/sa/admin"]}}]}]}]}));
    assert!(
        allowed(&not_p, &f),
        "no peer matches notPrincipals, as in Istio"
    );
}

#[test]
fn paths_are_matched_normalized_and_rewritten() {
    let h = [];
    let mut f = facts(&h);
    let deny = one_rule(
        "DENY",
        json!({"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}),
    );
    for bypass in [
        "//admin",
        "/a/../admin",
        "/admin?x=1",
        "/admin#frag",
        "/%61dmin",
        "/./admin/",
        "/public/..//admin/x",
    ] {
        f.path = Some(bypass);
        let d = decide(&deny, &f);
        assert_eq!(d.deny, Some(DenyReason::DenyPolicy(0)), "{bypass}");
    }
    for refused in [
        "/%2Fadmin",
        "/a%5cadmin",
        "/a\\admin",
        "/a%00",
        "/a%zz",
        "admin",
    ] {
        f.path = Some(refused);
        let d = decide(&deny, &f);
        assert!(matches!(d.deny, Some(DenyReason::BadPath(_))), "{refused}");
        assert_eq!(d.status(), 400);
    }
    f.path = None;
    assert_eq!(
        decide(&deny, &f).deny,
        Some(DenyReason::BadPath(PathError::Missing))
    );
    // Case-sensitive: /ADMIN is another path (and forwarded as such).
    f.path = Some("/ADMIN");
    assert!(allowed(&deny, &f));
    // An allowed, changed path is forwarded normalized, query kept.
    f.path = Some("/x/../public//a?q=1#f");
    let d = decide(&deny, &f);
    assert!(d.allowed);
    assert_eq!(d.rewrite_path.as_deref(), Some("/public/a?q=1"));
    f.path = Some("/public/a?q=1");
    assert_eq!(decide(&deny, &f).rewrite_path, None);
    // No path policy: the path is neither checked nor rewritten.
    let no_paths = allow(json!({"to": [{"operation": {"methods": ["GET"]}}]}));
    f.path = Some("/%2F/../x");
    let d = decide(&no_paths, &f);
    assert!(d.allowed);
    assert_eq!(d.rewrite_path, None);
}

#[test]
fn not_paths_and_templates() {
    let h = [];
    let mut f = facts(&h);
    let p = allow(json!({"to": [{"operation": {"notPaths": ["/admin/*"]}}]}));
    f.path = Some("//admin/x");
    assert!(!allowed(&p, &f), "CVE-2021-31920: ALLOW+notPaths with //");
    f.path = Some("/public");
    assert!(allowed(&p, &f));
    let t = allow(json!({"to": [{"operation": {"paths": ["/api/{*}/items/{**}"]}}]}));
    f.path = Some("/api/v1/items/1/2");
    assert!(allowed(&t, &f));
    f.path = Some("/api/v1/x/items/1");
    assert!(!allowed(&t, &f));
    f.path = Some("/api/v1/../v2/items/7");
    assert!(allowed(&t, &f));
}

#[test]
fn hosts_ports_methods() {
    let h = [];
    let mut f = facts(&h);
    let p = allow(json!({"to": [{"operation": {"hosts": ["example.com"]}}]}));
    for host in [
        "example.com",
        "EXAMPLE.COM",
        "example.com:8080",
        "Example.Com.:443",
    ] {
        f.host = Some(host);
        assert!(allowed(&p, &f), "{host}");
    }
    f.host = Some("evil.com");
    assert!(!allowed(&p, &f));
    let not = allow(json!({"to": [{"operation": {"notHosts": ["*.internal"]}}]}));
    f.host = Some("DB.INTERNAL:5432");
    assert!(!allowed(&not, &f));

    let ports = allow(json!({"to": [{"operation": {"ports": ["8080", "8443"]}}]}));
    assert!(allowed(&ports, &f));
    f.destination_port = Some(9000);
    assert!(!allowed(&ports, &f));
    let not_ports = allow(json!({"to": [{"operation": {"notPorts": ["9000"]}}]}));
    assert!(!allowed(&not_ports, &f));

    let methods = allow(json!({"to": [{"operation": {"methods": ["GET", "HEAD"]}}]}));
    assert!(allowed(&methods, &f));
    f.method = Some("get");
    assert!(!allowed(&methods, &f), "methods are case-sensitive");
}

#[test]
fn ip_blocks_and_remote_ip() {
    let xff: Vec<(String, Vec<u8>)> = vec![
        ("x-forwarded-for".into(), b"6.6.6.6, 203.0.113.9".to_vec()),
        ("x-forwarded-for".into(), b"10.1.1.1".to_vec()),
    ];
    let mut f = facts(&xff);
    let ip = allow(json!({"from": [{"source": {"ipBlocks": ["10.0.0.0/24"]}}]}));
    assert!(allowed(&ip, &f));
    f.source_ip = Some("10.0.1.1".parse().unwrap());
    assert!(!allowed(&ip, &f));
    let not_ip = allow(json!({"from": [{"source": {"notIpBlocks": ["10.0.1.0/24"]}}]}));
    assert!(!allowed(&not_ip, &f));

    // numTrustedProxies 0: remote = direct peer; x-forwarded-for ignored.
    let remote = |n: u32, block: &str| {
        compile(json!({"numTrustedProxies": n, "policies": [
            {"name": "p", "rules": [{"from": [{"source": {"remoteIpBlocks": [block]}}]}]}]}))
    };
    assert!(allowed(&remote(0, "10.0.1.1"), &f));
    assert!(!allowed(&remote(0, "6.6.6.6"), &f));
    // 1 trusted hop: the rightmost entry (across repeated headers) is the client.
    assert!(allowed(&remote(1, "10.1.1.1"), &f));
    assert!(allowed(&remote(2, "203.0.113.0/24"), &f));
    assert!(allowed(&remote(3, "6.6.6.6"), &f));
    let d = decide(&remote(4, "6.6.6.6"), &f);
    assert!(
        matches!(d.deny, Some(DenyReason::Unavailable(_))),
        "too few hops fails closed"
    );
    let no_xff = [];
    assert!(!allowed(&remote(1, "0.0.0.0/0"), &facts(&no_xff)));
    assert_eq!(
        remote(1, "10.0.0.0/8").needs().headers,
        vec!["x-forwarded-for".to_string()]
    );
    assert!(remote(0, "10.0.0.0/8").needs().headers.is_empty());

    let when = allow(json!({"when": [{"key": "remote.ip", "values": ["203.0.113.9"]}]}));
    assert!(
        !allowed(&when, &f),
        "numTrustedProxies 0: remote.ip is the peer"
    );
    let when = allow(json!({"when": [{"key": "source.ip", "notValues": ["10.0.1.0/24"]}]}));
    assert!(!allowed(&when, &f));
}

#[test]
fn headers_per_value_and_presence() {
    let dup: Vec<(String, Vec<u8>)> = vec![
        ("x-role".into(), b"user".to_vec()),
        ("x-role".into(), b"admin".to_vec()),
        ("x-empty".into(), Vec::new()),
    ];
    let f = facts(&dup);
    let deny = one_rule(
        "DENY",
        json!({"when": [{"key": "request.headers[X-Role]", "values": ["admin"]}]}),
    );
    assert!(
        !allowed(&deny, &f),
        "CVE-2026-26308: each value is tested on its own"
    );
    let joined = one_rule(
        "DENY",
        json!({"when": [{"key": "request.headers[x-role]", "values": ["user,admin"]}]}),
    );
    assert!(allowed(&joined, &f), "values are not joined");
    let present = allow(json!({"when": [{"key": "request.headers[x-empty]", "values": ["*"]}]}));
    assert!(allowed(&present, &f), "`*` matches a present, empty header");
    let absent = allow(json!({"when": [{"key": "request.headers[x-missing]", "values": ["*"]}]}));
    assert!(!allowed(&absent, &f));
    let not_absent =
        allow(json!({"when": [{"key": "request.headers[x-missing]", "notValues": ["*"]}]}));
    assert!(allowed(&not_absent, &f));
    let not_admin =
        allow(json!({"when": [{"key": "request.headers[x-role]", "notValues": ["admin"]}]}));
    assert!(!allowed(&not_admin, &f));
    let prefix = allow(json!({"when": [{"key": "request.headers[x-role]", "values": ["adm*"]}]}));
    assert!(allowed(&prefix, &f));
    assert_eq!(deny.needs().headers, vec!["x-role".to_string()]);
}

fn identity() -> RequestIdentity {
    RequestIdentity::from_claims(
        json!({"iss": "https://idp.example.com", "sub": "alice", "aud": ["orders", "billing"],
               "azp": "web", "groups": ["dev", "ops"], "org": {"team": "red"}})
        .as_object()
        .unwrap()
        .clone(),
    )
    .unwrap()
}

#[test]
fn request_principals_and_auth_conditions() {
    let h = [];
    let id = identity();
    let mut f = facts(&h);
    let rp = |v: Value| allow(json!({"from": [{"source": v}]}));
    let exact = rp(json!({"requestPrincipals": ["https://idp.example.com/alice"]}));
    assert!(!allowed(&exact, &f), "no identity ⇒ no match");
    let any = rp(json!({"notRequestPrincipals": ["*"]}));
    assert!(
        allowed(&any, &f),
        "no identity ⇒ notRequestPrincipals [*] matches"
    );
    f.identity = Some(&id);
    assert!(allowed(&exact, &f));
    assert!(!allowed(&any, &f));
    assert!(allowed(&rp(json!({"requestPrincipals": ["*"]})), &f));
    assert!(!allowed(
        &rp(json!({"requestPrincipals": ["https://idp.example.com/bob"]})),
        &f
    ));

    let when = |key: &str, values: Value| allow(json!({"when": [{"key": key, "values": values}]}));
    assert!(allowed(
        &when(
            "request.auth.principal",
            json!(["https://idp.example.com/*"])
        ),
        &f
    ));
    assert!(allowed(
        &when("request.auth.audiences", json!(["billing"])),
        &f
    ));
    assert!(!allowed(
        &when("request.auth.audiences", json!(["payroll"])),
        &f
    ));
    assert!(allowed(&when("request.auth.presenter", json!(["web"])), &f));
    assert!(allowed(
        &when("request.auth.claims[groups]", json!(["ops"])),
        &f
    ));
    assert!(allowed(
        &when("request.auth.claims[org][team]", json!(["red"])),
        &f
    ));
    assert!(!allowed(
        &when("request.auth.claims[org][team]", json!(["blue"])),
        &f
    ));
    assert!(!allowed(
        &when("request.auth.claims[org]", json!(["*"])),
        &f
    ));
    f.identity = None;
    assert!(!allowed(
        &when("request.auth.claims[groups]", json!(["*"])),
        &f
    ));
    assert!(exact.needs().identity);
}

#[test]
fn other_when_keys() {
    let h = [];
    let mut f = facts(&h);
    let when = |key: &str, values: Value| allow(json!({"when": [{"key": key, "values": values}]}));
    assert!(allowed(&when("source.namespace", json!(["default"])), &f));
    assert!(allowed(
        &when(
            "source.principal",
            json!(["cluster.local/ns/default/sa/frontend"])
        ),
        &f
    ));
    assert!(!allowed(
        &when("source.principal", json!(["cluster.local/ns/default/sa/x"])),
        &f
    ));
    assert!(allowed(&when("destination.port", json!(["8080"])), &f));
    let sni = when("connection.sni", json!(["*.example.com"]));
    assert!(!allowed(&sni, &f));
    f.sni = Some("api.example.com");
    assert!(allowed(&sni, &f));
    assert!(sni.needs().sni);
    let both = allow(
        json!({"when": [{"key": "connection.sni", "values": ["*.example.com"], "notValues": ["api.*"]}]}),
    );
    assert!(!allowed(&both, &f));
}

#[test]
fn dry_run_reports_but_never_denies_or_rewrites() {
    let h = [];
    let mut f = facts(&h);
    let p = compile(json!({"dryRun": true, "policies": [
        {"name": "deny-admin", "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}]}));
    f.path = Some("//admin");
    let d = decide(&p, &f);
    assert!(d.allowed);
    assert!(d.dry_run_would_deny);
    assert_eq!(d.deny, Some(DenyReason::DenyPolicy(0)));
    assert_eq!(d.rewrite_path, None);
    f.path = Some("/%2F");
    let d = decide(&p, &f);
    assert!(d.allowed && d.dry_run_would_deny);
    f.path = Some("/ok");
    f.mtls = false;
    let d = decide(&p, &f);
    assert!(d.allowed && d.dry_run_would_deny);
    f.mtls = true;
    let d = decide(&p, &f);
    assert!(d.allowed && !d.dry_run_would_deny);
}

#[test]
fn needs_track_only_what_policies_read() {
    let p = compile(json!({"requireMtls": false, "policies": [
        {"name": "p", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}]}));
    let n = p.needs();
    assert!(n.method && !n.path && !n.host && !n.peer && !n.identity && !n.sni && !n.source_ip);
    assert!(n.headers.is_empty());
    let p = compile(json!({}));
    assert!(p.needs().peer, "requireMtls needs the peer");
    let p = allow(
        json!({"from": [{"source": {"principals": ["*"]}}], "to": [{"operation": {"paths": ["/x"], "hosts": ["h"], "ports": ["1"]}}]}),
    );
    let n = p.needs();
    assert!(n.peer && n.path && n.host && n.destination_port && !n.method);
}

#[test]
fn unavailable_facts_fail_closed() {
    let h = [];
    let mut f = facts(&h);
    f.host = None;
    let p = allow(json!({"to": [{"operation": {"notHosts": ["admin.example.com"]}}]}));
    assert_eq!(
        decide(&p, &f).deny,
        Some(DenyReason::Unavailable(":authority"))
    );
    let mut f = facts(&h);
    f.source_ip = None;
    let p = one_rule(
        "DENY",
        json!({"from": [{"source": {"ipBlocks": ["6.6.6.0/24"]}}]}),
    );
    assert_eq!(
        decide(&p, &f).deny,
        Some(DenyReason::Unavailable("source.address"))
    );
}

#[test]
fn config_errors_name_the_field() {
    let e = config_error(
        json!({"policies": [{"name": "p", "rules": [{"when": [{"key": "request.time", "values": ["1"]}]}]}]}),
    );
    assert_eq!(e.field, "policies[0].rules[0].when[0].key");
    assert!(e.reason.contains("unsupported key `request.time`"), "{e}");

    let e = config_error(
        json!({"policies": [{"name": "p", "rules": [{"from": [{"source": {"principals": ["ok/ns/a/sa/b", "a*b"]}}]}]}]}),
    );
    assert_eq!(e.field, "policies[0].rules[0].from[0].source.principals[1]");

    let e = config_error(
        json!({"policies": [{"name": "p", "rules": [{"to": [{"operation": {"pathz": ["/"]}}]}]}]}),
    );
    assert_eq!(e.field, "policies[0].rules[0].to[0].operation.pathz");
    let e = config_error(json!({"requireMTLS": true}));
    assert_eq!(e.field, "requireMTLS");
    let e = config_error(json!({"policies": [{"name": "p", "action": "CUSTOM"}]}));
    assert_eq!(e.field, "policies[0].action");
    let e = config_error(json!({"policies": [{"name": "p"}, {"name": "p"}]}));
    assert_eq!(e.field, "policies[1].name");
    let e = config_error(json!({"policies": [{"name": "has space"}]}));
    assert_eq!(e.field, "policies[0].name");
    let e =
        config_error(json!({"policies": [{"name": "p", "rules": [{"from": [{"source": {}}]}]}]}));
    assert_eq!(e.field, "policies[0].rules[0].from[0].source");
    let e =
        config_error(json!({"policies": [{"name": "p", "rules": [{"to": [{"operation": {}}]}]}]}));
    assert_eq!(e.field, "policies[0].rules[0].to[0].operation");
    let e = config_error(
        json!({"policies": [{"name": "p", "rules": [{"when": [{"key": "source.ip"}]}]}]}),
    );
    assert_eq!(e.field, "policies[0].rules[0].when[0]");
    let e = config_error(
        json!({"policies": [{"name": "p", "rules": [{"when": [{"key": "source.ip", "values": ["1.2.3.4", "x"]}]}]}]}),
    );
    assert_eq!(e.field, "policies[0].rules[0].when[0].values[1]");
    let e = config_error(
        json!({"policies": [{"name": "p", "rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}]}),
    );
    assert_eq!(e.field, "policies[0].rules[0].to[0].operation.ports[0]");
    let e = config_error(
        json!({"policies": [{"name": "p", "rules": [{"to": [{"operation": {"notPaths": ["/a/{**}/b"]}}]}]}]}),
    );
    assert_eq!(e.field, "policies[0].rules[0].to[0].operation.notPaths[0]");
    let e = config_error(
        json!({"policies": [{"name": "p", "rules": [{"from": [{"source": {"notIpBlocks": ["10.0.0.0/40"]}}]}]}]}),
    );
    assert_eq!(
        e.field,
        "policies[0].rules[0].from[0].source.notIpBlocks[0]"
    );
    let e = config_error(
        json!({"policies": [{"name": "p", "rules": [{"when": [{"key": "request.headers[a b]", "values": ["1"]}]}]}]}),
    );
    assert_eq!(e.field, "policies[0].rules[0].when[0].key");
    let e = config_error(
        json!({"policies": [{"name": "p", "rules": [{"when": [{"key": "request.auth.claims[]", "values": ["1"]}]}]}]}),
    );
    assert_eq!(e.field, "policies[0].rules[0].when[0].key");
    let e = config_error(json!({"numTrustedProxies": -1}));
    assert_eq!(e.field, "numTrustedProxies");
    let e = config_error(
        json!({"policies": [{"name": "p", "rules": [{"from": [{"source": {"requestPrincipals": ["noslash"]}}]}]}]}),
    );
    assert_eq!(
        e.field,
        "policies[0].rules[0].from[0].source.requestPrincipals[0]"
    );
}

#[test]
fn defaults() {
    let p = compile(json!({}));
    assert!(!p.dry_run());
    assert_eq!(p.policy_count(), 0);
    // Empty config bytes parse as `{}` (Envoy passes an empty buffer when no config is set).
    let p = Config::parse(b"").unwrap();
    assert!(p.needs().peer);
}

fn repo_file(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../..")
        .join(rel)
}

#[test]
fn example_policies_compile() {
    let dir = repo_file("policies/spiffe-authz");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") && !path.ends_with("schema.json") {
            let bytes = std::fs::read(&path).unwrap();
            Config::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            count += 1;
        }
    }
    assert!(count >= 4);
    let ten = Config::parse(&std::fs::read(dir.join("mesh-10.json")).unwrap()).unwrap();
    assert_eq!(ten.policy_count(), 10);
}

#[test]
fn scenario_configs_compile_and_invalid_ones_name_their_field() {
    let dir = repo_file("tests/scenarios/spiffe-authz");
    let mut scenarios = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for entry in doc["chain"].as_array().unwrap() {
            if entry["filter"] == "spiffe-authz" {
                Config::parse(entry["config"].to_string().as_bytes())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                scenarios += 1;
            }
        }
    }
    assert!(scenarios >= 7);
    let invalid: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo_file("tests/config-rejections/spiffe-authz.yaml")).unwrap(),
    )
    .unwrap();
    for case in invalid.as_array().unwrap() {
        let e = config_error(case["config"].clone());
        assert_eq!(e.field, case["field"].as_str().unwrap(), "{}", case["name"]);
        assert!(e.to_string().contains(&format!("field `{}`", e.field)));
    }
}

#[test]
fn path_parameters_are_refused_or_stripped() {
    let h = [];
    let mut f = facts(&h);
    let rules = json!([
        {"name": "deny-admin", "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}]},
        {"name": "public", "rules": [{"to": [{"operation": {"paths": ["/public/*"]}}]}]},
    ]);
    let reject = compile(json!({"policies": rules}));
    let explicit = compile(json!({"policies": rules, "pathParameters": "REJECT"}));
    let strip = compile(json!({"policies": rules, "pathParameters": "STRIP"}));
    for raw in [
        "/public/..;/admin",
        "/public/%2e%2e;/admin",
        "/public/.;/../admin",
        "/admin;x",
        "/admin;x/users",
        "/public/x;jsessionid=1",
    ] {
        f.path = Some(raw);
        for p in [&reject, &explicit] {
            let d = decide(p, &f);
            assert_eq!(
                d.deny,
                Some(DenyReason::BadPath(PathError::PathParameter)),
                "{raw}"
            );
            assert_eq!(d.status(), 400);
        }
    }
    for raw in [
        "/public/..;/admin",
        "/public/%2e%2e;/admin",
        "/public/.;/../admin",
        "/admin;x",
        "/admin;x/users",
    ] {
        f.path = Some(raw);
        assert_eq!(
            decide(&strip, &f).deny,
            Some(DenyReason::DenyPolicy(0)),
            "{raw}"
        );
    }
    f.path = Some("/public/x;jsessionid=1?a=1;2");
    let d = decide(&strip, &f);
    assert!(d.allowed);
    assert_eq!(d.rewrite_path.as_deref(), Some("/public/x?a=1;2"));
    for raw in ["/public/x%3Bjsessionid=1", "/admin%3bx"] {
        f.path = Some(raw);
        assert_eq!(
            decide(&strip, &f).deny,
            Some(DenyReason::BadPath(PathError::PathParameter)),
            "{raw}"
        );
    }
    // An unknown value names the field and the accepted ones.
    let e = config_error(json!({"pathParameters": "DROP"}));
    assert_eq!(e.field, "pathParameters");
    assert!(
        e.reason.contains("REJECT") && e.reason.contains("STRIP"),
        "{e}"
    );
    assert_eq!(
        config_error(json!({"pathParameters": "strip"})).field,
        "pathParameters"
    );
}

#[test]
fn when_on_path_uses_the_normalized_path_with_and_without_query() {
    let h = [];
    let mut f = facts(&h);
    let deny = one_rule(
        "DENY",
        json!({"when": [{"key": "request.headers[:path]", "values": ["/admin*"]}]}),
    );
    assert!(deny.needs().path, "a :path condition brings normalization");
    for raw in [
        "//admin/users",
        "/./admin/users",
        "/%61dmin",
        "/x/%2e%2e/admin?q",
    ] {
        f.path = Some(raw);
        assert_eq!(
            decide(&deny, &f).deny,
            Some(DenyReason::DenyPolicy(0)),
            "{raw}"
        );
    }
    f.path = Some("/admin;x");
    assert_eq!(
        decide(&deny, &f).deny,
        Some(DenyReason::BadPath(PathError::PathParameter))
    );
    // The allowed request is forwarded as matched.
    f.path = Some("/x/../public?next=/admin");
    let d = decide(&deny, &f);
    assert!(d.allowed);
    assert_eq!(d.rewrite_path.as_deref(), Some("/public?next=/admin"));
    // DENY exact `/admin` also catches `/admin?x` (the path reading); a query pattern still
    // matches (the path-and-query reading).
    let exact = one_rule(
        "DENY",
        json!({"when": [{"key": "request.headers[:PATH]", "values": ["/admin", "/search?debug=*"]}]}),
    );
    for raw in ["/admin?x=1", "//search?debug=1"] {
        f.path = Some(raw);
        assert!(!allowed(&exact, &f), "{raw}");
    }
    // ALLOW must hold for both readings: `*.json` does not allow `/admin?x.json`.
    let json_only =
        allow(json!({"when": [{"key": "request.headers[:path]", "values": ["*.json"]}]}));
    f.path = Some("/admin?x.json");
    assert!(!allowed(&json_only, &f));
    f.path = Some("/a/b.json");
    assert!(allowed(&json_only, &f));
    // DENY notValues: deny what is not under /public; `/public?x` is under /public.
    let only_public = one_rule(
        "DENY",
        json!({"when": [{"key": "request.headers[:path]", "notValues": ["/public*"]}]}),
    );
    f.path = Some("/secret?/public");
    assert!(!allowed(&only_public, &f));
    f.path = Some("/x/../public?y");
    assert!(allowed(&only_public, &f));
    // Values that can never match are config errors.
    for bad in ["/a/../admin", "admin", "/a;b", "//x*"] {
        let e = config_error(json!({"policies": [{"name": "p", "rules": [{"when": [
            {"key": "request.headers[:path]", "values": [bad]}]}]}]}));
        assert_eq!(
            e.field, "policies[0].rules[0].when[0].values[0]",
            "{bad}: {e}"
        );
    }
}

#[test]
fn when_on_authority_and_host_matches_as_hosts() {
    let h = [];
    let mut f = facts(&h);
    for key in [
        "request.headers[:authority]",
        "request.headers[host]",
        "request.headers[Host]",
    ] {
        let deny = one_rule(
            "DENY",
            json!({"when": [{"key": key, "values": ["internal.example.com"]}]}),
        );
        assert!(
            deny.needs().host && deny.needs().headers.is_empty(),
            "{key}"
        );
        for authority in [
            "internal.example.com",
            "INTERNAL.example.com",
            "internal.example.com:80",
            "Internal.Example.COM.:8443",
        ] {
            f.host = Some(authority);
            assert!(!allowed(&deny, &f), "{key} {authority}");
        }
        f.host = Some("www.example.com");
        assert!(allowed(&deny, &f), "{key}");
        f.host = None;
        assert_eq!(
            decide(&deny, &f).deny,
            Some(DenyReason::Unavailable(":authority")),
            "{key}"
        );
    }
}

#[test]
fn header_names_spelled_with_underscores_are_refused() {
    let deny = compile(json!({"numTrustedProxies": 1, "policies": [
        {"name": "d", "action": "DENY", "rules": [{"when": [{"key": "request.headers[x-role]", "values": ["admin"]}]}]},
        {"name": "a", "rules": [{"from": [{"source": {"remoteIpBlocks": ["10.0.0.0/8"]}}]}]},
    ]}));
    let header = |n: &str, v: &str| (n.to_string(), v.as_bytes().to_vec());
    type Headers = Vec<(String, Vec<u8>)>;
    let cases: [(Headers, Option<DenyReason>); 6] = [
        (
            vec![
                header("x-forwarded-for", "10.0.0.1"),
                header("x-role", "admin"),
            ],
            Some(DenyReason::DenyPolicy(0)),
        ),
        (
            vec![
                header("x-forwarded-for", "10.0.0.1"),
                header("x_role", "admin"),
            ],
            Some(DenyReason::AmbiguousHeader),
        ),
        (
            vec![
                header("x-forwarded-for", "10.0.0.1"),
                header("X_Role", "user"),
            ],
            Some(DenyReason::AmbiguousHeader),
        ),
        (
            vec![
                header("x-forwarded-for", "10.0.0.1"),
                header("x-ROLE", "user"),
            ],
            None,
        ),
        (
            vec![header("x_forwarded_for", "10.0.0.1")],
            Some(DenyReason::AmbiguousHeader),
        ),
        (
            vec![
                header("x-forwarded-for", "10.0.0.1"),
                header("x_other", "admin"),
            ],
            None,
        ),
    ];
    for (headers, want) in cases {
        let f = facts(&headers);
        let d = decide(&deny, &f);
        assert_eq!(d.deny, want, "{headers:?}");
        if want == Some(DenyReason::AmbiguousHeader) {
            assert_eq!(d.status(), 400);
        }
    }
}

#[test]
fn an_unreadable_identity_denies_only_where_it_is_needed() {
    let h = [];
    let mut f = facts(&h);
    f.identity_unreadable = true;
    let deny = compile(json!({"policies": [
        {"name": "d", "action": "DENY", "rules": [{"from": [{"source": {"requestPrincipals": ["https://partner/*"]}}]}]},
    ]}));
    assert!(matches!(
        decide(&deny, &f).deny,
        Some(DenyReason::Unavailable(what)) if what.contains("meshward_request_auth")
    ));
    let claims = one_rule(
        "DENY",
        json!({"when": [{"key": "request.auth.claims[role]", "notValues": ["user"]}]}),
    );
    assert!(!allowed(&claims, &f));
    // A policy that does not read the identity is not concerned.
    let paths = one_rule(
        "DENY",
        json!({"to": [{"operation": {"paths": ["/admin"]}}]}),
    );
    assert!(allowed(&paths, &f));
    f.identity_unreadable = false;
    assert!(allowed(&deny, &f));
}

// --- TCP (the network filter): istiod's TCP builder semantics -------------------------------

fn tcp(v: Value) -> Config {
    Config::parse_for(v.to_string().as_bytes(), crate::Protocol::Tcp).unwrap()
}

/// A connection from `FRONTEND` (10.0.0.1) to 10.0.0.9:8080: no HTTP attributes at all.
fn connection<'a>() -> PlainFacts<'a> {
    PlainFacts {
        method: None,
        path: None,
        host: None,
        ..facts(&[])
    }
}

fn tcp_one(action: &str, rule: Value) -> Config {
    tcp(json!({"policies": [{"name": "p", "action": action, "rules": [rule]}]}))
}

#[test]
fn tcp_fields_decide_connections() {
    let f = connection();
    let cases = [
        (
            json!({"from": [{"source": {"principals": ["cluster.local/ns/default/sa/frontend"]}}]}),
            true,
        ),
        (
            json!({"from": [{"source": {"principals": ["cluster.local/ns/default/sa/other"]}}]}),
            false,
        ),
        (
            json!({"from": [{"source": {"notPrincipals": ["*/sa/frontend"]}}]}),
            false,
        ),
        (
            json!({"from": [{"source": {"namespaces": ["default"]}}]}),
            true,
        ),
        (
            json!({"from": [{"source": {"notNamespaces": ["default"]}}]}),
            false,
        ),
        (
            json!({"from": [{"source": {"ipBlocks": ["10.0.0.0/24"]}}]}),
            true,
        ),
        (
            json!({"from": [{"source": {"notIpBlocks": ["10.0.0.1"]}}]}),
            false,
        ),
        // No x-forwarded-for on a connection: the remote address is the peer's.
        (
            json!({"from": [{"source": {"remoteIpBlocks": ["10.0.0.1/32"]}}]}),
            true,
        ),
        (json!({"to": [{"operation": {"ports": ["8080"]}}]}), true),
        (
            json!({"to": [{"operation": {"notPorts": ["8080"]}}]}),
            false,
        ),
        (
            json!({"when": [{"key": "source.ip", "values": ["10.0.0.1"]}]}),
            true,
        ),
        (
            json!({"when": [{"key": "source.namespace", "notValues": ["default"]}]}),
            false,
        ),
        (
            json!({"when": [{"key": "source.principal", "values": ["*/frontend"]}]}),
            true,
        ),
        (
            json!({"when": [{"key": "destination.ip", "values": ["10.0.0.0/28"]}]}),
            true,
        ),
        (
            json!({"when": [{"key": "destination.ip", "notValues": ["10.0.0.9"]}]}),
            false,
        ),
        (
            json!({"when": [{"key": "destination.port", "values": ["8081"]}]}),
            false,
        ),
        (
            json!({"when": [{"key": "connection.sni", "values": ["db.example.com"]}]}),
            false,
        ),
    ];
    for (rule, want) in cases {
        let p = tcp_one("ALLOW", rule.clone());
        assert_eq!(allowed(&p, &f), want, "{rule}");
        // Only connection attributes are read.
        let n = p.needs();
        assert!(!n.method && !n.path && !n.host && !n.identity && n.headers.is_empty());
    }
    let mut with_sni = connection();
    with_sni.sni = Some("db.example.com");
    let p = tcp_one(
        "ALLOW",
        json!({"when": [{"key": "connection.sni", "values": ["*.example.com"]}]}),
    );
    assert!(allowed(&p, &with_sni));
    assert!(p.needs().sni);
}

#[test]
fn tcp_allow_rules_with_http_only_fields_never_match() {
    let f = connection();
    for rule in [
        json!({"to": [{"operation": {"methods": ["GET"]}}]}),
        json!({"to": [{"operation": {"notMethods": ["GET"]}}]}),
        json!({"to": [{"operation": {"paths": ["/*"], "ports": ["8080"]}}]}),
        json!({"to": [{"operation": {"hosts": ["*"]}}]}),
        json!({"from": [{"source": {"requestPrincipals": ["*"], "principals": ["*"]}}]}),
        json!({"from": [{"source": {"principals": ["*"]}}, {"source": {"notRequestPrincipals": ["*"]}}]}),
        json!({"when": [{"key": "request.headers[x-team]", "notValues": ["a"]}]}),
        json!({"when": [{"key": "request.auth.claims[iss]", "values": ["x"]}]}),
    ] {
        let p = tcp_one("ALLOW", rule.clone());
        let d = decide(&p, &f);
        assert_eq!(d.deny, Some(DenyReason::NoAllowMatched), "{rule}");
        // The same rule decides an HTTP request (a GET) as written.
        assert!(p.needs().headers.is_empty() && !p.needs().method, "{rule}");
    }
    // Another rule of the same policy still allows.
    let p = tcp(json!({"policies": [{"name": "p", "rules": [
        {"to": [{"operation": {"methods": ["GET"]}}]},
        {"from": [{"source": {"namespaces": ["default"]}}]},
    ]}]}));
    assert_eq!(decide(&p, &f).matched_policy, Some(0));
}

#[test]
fn tcp_deny_and_audit_rules_drop_http_only_fields_and_widen() {
    let f = connection();
    // DENY on a method: every connection is denied (istiod drops the key; `any` remains).
    let p = tcp_one("DENY", json!({"to": [{"operation": {"methods": ["GET"]}}]}));
    assert_eq!(decide(&p, &f).deny, Some(DenyReason::DenyPolicy(0)));
    // DENY on request principals only: every connection.
    let p = tcp_one(
        "DENY",
        json!({"from": [{"source": {"notRequestPrincipals": ["*"]}}]}),
    );
    assert_eq!(decide(&p, &f).deny, Some(DenyReason::DenyPolicy(0)));
    // What remains still has to match: a DENY on paths from another namespace.
    let p = tcp_one(
        "DENY",
        json!({"from": [{"source": {"namespaces": ["other"]}}], "to": [{"operation": {"paths": ["/admin"]}}]}),
    );
    assert!(allowed(&p, &f));
    let p = tcp_one(
        "DENY",
        json!({"when": [{"key": "request.headers[x-a]", "values": ["1"]}, {"key": "source.ip", "values": ["10.0.0.0/8"]}]}),
    );
    assert_eq!(decide(&p, &f).deny, Some(DenyReason::DenyPolicy(0)));
    // AUDIT widens the same way.
    let p = tcp_one("AUDIT", json!({"to": [{"operation": {"paths": ["/x"]}}]}));
    let d = decide(&p, &f);
    assert!(d.allowed);
    assert_eq!(d.audit_matched, vec![0]);
}

#[test]
fn tcp_keeps_deny_before_allow_allow_nothing_and_require_mtls() {
    let f = connection();
    let p = tcp(json!({"policies": [
        {"name": "allow-all", "rules": [{}]},
        {"name": "deny-frontend", "action": "DENY", "rules": [{"from": [{"source": {"principals": ["*/sa/frontend"]}}]}]},
    ]}));
    assert_eq!(decide(&p, &f).deny, Some(DenyReason::DenyPolicy(1)));
    // allow-nothing: an ALLOW policy without rules.
    let p = tcp(json!({"policies": [{"name": "nothing"}]}));
    assert_eq!(decide(&p, &f).deny, Some(DenyReason::NoAllowMatched));
    // No ALLOW policy at all: allowed (with a verified peer).
    let p = tcp(json!({}));
    assert!(allowed(&p, &f));
    let mut plaintext = connection();
    plaintext.mtls = false;
    assert_eq!(
        decide(&p, &plaintext).deny,
        Some(DenyReason::NoVerifiedPeer)
    );
    let mut invalid = connection();
    invalid.peer = None;
    assert_eq!(decide(&p, &invalid).deny, Some(DenyReason::NoVerifiedPeer));
    // The whole config is still validated for TCP.
    let bad = json!({"policies": [{"name": "p", "rules": [{"to": [{"operation": {"paths": ["/a{*}b"]}}]}]}]});
    assert!(Config::parse_for(bad.to_string().as_bytes(), crate::Protocol::Tcp).is_err());
}

#[test]
fn destination_ip_is_a_when_key() {
    let h = [];
    let f = facts(&h);
    let p = allow(json!({"when": [{"key": "destination.ip", "values": ["10.0.0.9/32"]}]}));
    assert!(allowed(&p, &f));
    assert!(p.needs().destination_ip);
    let mut missing = facts(&h);
    missing.destination_ip = None;
    assert_eq!(
        decide(&p, &missing).deny,
        Some(DenyReason::Unavailable("destination.address"))
    );
    let e = config_error(
        json!({"policies": [{"name": "p", "rules": [{"when": [{"key": "destination.ip", "values": ["nope"]}]}]}]}),
    );
    assert!(e.to_string().contains("when[0].values[0]"), "{e}");
}

#[test]
fn sni_is_compared_without_case() {
    let deny = tcp_one(
        "DENY",
        json!({"when": [{"key": "connection.sni", "values": ["Admin.DB.example.com"]}]}),
    );
    for sent in ["admin.db.example.com", "ADMIN.db.EXAMPLE.com"] {
        let mut f = connection();
        f.sni = Some(sent);
        assert_eq!(
            decide(&deny, &f).deny,
            Some(DenyReason::DenyPolicy(0)),
            "{sent}"
        );
    }
    let mut other = connection();
    other.sni = Some("db.example.com");
    assert!(allowed(&deny, &other));
}
