//! `explain`: the exact words for every field kind, the order failures are reported in, the
//! preconditions, and agreement with `decide` (and with each compiled rule) over many requests.

use meshward_common::identity::RequestIdentity;
use meshward_common::path::PathError;
use meshward_common::spiffe::SpiffeId;
use serde_json::{json, Value};

use super::*;
use crate::PlainFacts;

fn compile(v: Value) -> Config {
    Config::parse_explainable(v.to_string().as_bytes()).unwrap()
}

const FRONTEND: &str = "spiffe://cluster.local/ns/web/sa/frontend";

/// A GET /api/v1/items over mTLS from `FRONTEND` to example.com:8080 from 10.0.0.1.
fn facts<'a>(headers: &'a [(String, Vec<u8>)]) -> PlainFacts<'a> {
    PlainFacts {
        mtls: true,
        peer: Some(SpiffeId::parse(FRONTEND).unwrap()),
        method: Some("GET"),
        path: Some("/api/v1/items"),
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

fn alice() -> RequestIdentity {
    RequestIdentity::from_claims(
        json!({"iss": "https://idp.example.com", "sub": "alice", "aud": ["orders", "billing"],
               "azp": "web", "groups": ["dev"], "org": {"team": "red"}})
        .as_object()
        .unwrap()
        .clone(),
    )
    .unwrap()
}

/// `policies[0].rules[0]`'s failure, as `field: message`, under `extra` config keys.
fn failure_with(extra: Value, action: &str, rule: Value, f: &PlainFacts<'_>) -> String {
    let mut config = json!({"requireMtls": false,
        "policies": [{"name": "p", "action": action, "rules": [rule]}]});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let e = explain(&compile(config), f);
    assert_eq!(e.stopped_before_policies, None);
    let rule = &e.policies[0].rules[0];
    assert!(!rule.matched);
    rule.failed.as_ref().unwrap().to_string()
}

fn failure(rule: Value, f: &PlainFacts<'_>) -> String {
    failure_with(json!({}), "ALLOW", rule, f)
}

fn from(source: Value) -> Value {
    json!({"from": [{"source": source}]})
}

fn to(operation: Value) -> Value {
    json!({"to": [{"operation": operation}]})
}

fn when(key: &str, values: &[&str], not_values: &[&str]) -> Value {
    json!({"when": [{"key": key, "values": values, "notValues": not_values}]})
}

#[test]
fn source_fields_name_the_peer_and_the_patterns() {
    let h = [];
    let f = facts(&h);
    assert_eq!(
        failure(
            from(json!({"principals": ["cluster.local/ns/shop/sa/checkout"]})),
            &f
        ),
        "from[0].source.principals: peer cluster.local/ns/web/sa/frontend is not in \
         [cluster.local/ns/shop/sa/checkout]"
    );
    assert_eq!(
        failure(
            from(json!({"notPrincipals": ["cluster.local/ns/web/*"]})),
            &f
        ),
        "from[0].source.notPrincipals: peer cluster.local/ns/web/sa/frontend is in \
         [cluster.local/ns/web/*]"
    );
    assert_eq!(
        failure(
            from(json!({"notPrincipals": ["cluster.local/ns/shop/*", "*/sa/frontend"]})),
            &f
        ),
        "from[0].source.notPrincipals: peer cluster.local/ns/web/sa/frontend is in \
         [cluster.local/ns/shop/*, */sa/frontend] (matches */sa/frontend)"
    );
    assert_eq!(
        failure(from(json!({"namespaces": ["shop", "pay*"]})), &f),
        "from[0].source.namespaces: peer namespace web is not in [shop, pay*]"
    );
    assert_eq!(
        failure(from(json!({"notNamespaces": ["web"]})), &f),
        "from[0].source.notNamespaces: peer namespace web is in [web]"
    );
    assert_eq!(
        failure(from(json!({"ipBlocks": ["192.168.0.0/16"]})), &f),
        "from[0].source.ipBlocks: source address 10.0.0.1 is not in [192.168.0.0/16]"
    );
    assert_eq!(
        failure(from(json!({"notIpBlocks": ["10.0.0.0/8"]})), &f),
        "from[0].source.notIpBlocks: source address 10.0.0.1 is in [10.0.0.0/8]"
    );

    let mut plain = facts(&h);
    plain.mtls = false;
    assert_eq!(
        failure(from(json!({"principals": ["*"]})), &plain),
        "from[0].source.principals: no peer identity (plaintext or not mTLS), so not in [*]"
    );
    assert_eq!(
        failure(from(json!({"namespaces": ["web"]})), &plain),
        "from[0].source.namespaces: no peer identity (plaintext or not mTLS), so not in [web]"
    );
    let mut odd = facts(&h);
    odd.peer = Some(SpiffeId::parse("spiffe://cluster.local/workload").unwrap());
    assert_eq!(
        failure(from(json!({"namespaces": ["web"]})), &odd),
        "from[0].source.namespaces: peer cluster.local/workload has no namespace, so not in [web]"
    );
}

#[test]
fn request_principals_name_the_token_or_its_absence() {
    let h = [];
    let mut f = facts(&h);
    let rule = from(json!({"requestPrincipals": ["https://idp.example.com/bob"]}));
    assert_eq!(
        failure(rule.clone(), &f),
        "from[0].source.requestPrincipals: no request principal (no verified JWT), so not in \
         [https://idp.example.com/bob]"
    );
    let id = alice();
    f.identity = Some(&id);
    assert_eq!(
        failure(rule, &f),
        "from[0].source.requestPrincipals: request principal https://idp.example.com/alice is \
         not in [https://idp.example.com/bob]"
    );
    assert_eq!(
        failure(from(json!({"notRequestPrincipals": ["*"]})), &f),
        "from[0].source.notRequestPrincipals: request principal https://idp.example.com/alice \
         is in [*]"
    );
}

#[test]
fn remote_ip_blocks_read_the_trusted_hop() {
    let xff = [(
        "x-forwarded-for".to_string(),
        b"6.6.6.6, 203.0.113.7".to_vec(),
    )];
    let f = facts(&xff);
    let trusted = json!({"numTrustedProxies": 1});
    assert_eq!(
        failure_with(
            trusted.clone(),
            "ALLOW",
            from(json!({"remoteIpBlocks": ["10.0.0.0/8"]})),
            &f
        ),
        "from[0].source.remoteIpBlocks: remote address 203.0.113.7 is not in [10.0.0.0/8]"
    );
    assert_eq!(
        failure_with(
            trusted,
            "ALLOW",
            from(json!({"notRemoteIpBlocks": ["203.0.113.0/24"]})),
            &f
        ),
        "from[0].source.notRemoteIpBlocks: remote address 203.0.113.7 is in [203.0.113.0/24]"
    );
}

#[test]
fn operation_fields_name_the_request_and_the_patterns() {
    let h = [];
    let mut f = facts(&h);
    assert_eq!(
        failure(to(json!({"hosts": ["shop.example.com"]})), &f),
        "to[0].operation.hosts: host example.com is not in [shop.example.com]"
    );
    assert_eq!(
        failure(to(json!({"notHosts": ["*.com"]})), &f),
        "to[0].operation.notHosts: host example.com is in [*.com]"
    );
    assert_eq!(
        failure(to(json!({"ports": ["443"]})), &f),
        "to[0].operation.ports: port 8080 is not in [443]"
    );
    assert_eq!(
        failure(to(json!({"notPorts": ["8080", "8443"]})), &f),
        "to[0].operation.notPorts: port 8080 is in [8080, 8443] (matches 8080)"
    );
    f.method = Some("POST");
    assert_eq!(
        failure(to(json!({"methods": ["GET", "HEAD"]})), &f),
        "to[0].operation.methods: method POST is not in [GET, HEAD]"
    );
    assert_eq!(
        failure(to(json!({"notMethods": ["POST"]})), &f),
        "to[0].operation.notMethods: method POST is in [POST]"
    );
    f.path = Some("/admin/./x");
    assert_eq!(
        failure(to(json!({"paths": ["/api/*", "/health"]})), &f),
        "to[0].operation.paths: path /admin/x (normalized) is not in [/api/*, /health]"
    );
    assert_eq!(
        failure(to(json!({"notPaths": ["/admin/{**}"]})), &f),
        "to[0].operation.notPaths: path /admin/x (normalized) is in [/admin/{**}]"
    );
    // Request-derived text is escaped.
    f.method = Some("GE\u{1b}T");
    assert_eq!(
        failure(to(json!({"methods": ["GET"]})), &f),
        "to[0].operation.methods: method GE\\x1bT is not in [GET]"
    );
}

#[test]
fn when_conditions_name_the_key_and_the_values() {
    let id = alice();
    let headers = [
        ("x-role".to_string(), b"dev".to_vec()),
        ("x-role".to_string(), b"ops".to_vec()),
    ];
    let mut f = facts(&headers);
    f.identity = Some(&id);
    f.sni = Some("api.example.com");
    let cases: &[(Value, &str)] = &[
        (
            when("request.auth.claims[groups]", &["admin"], &[]),
            "when[0] request.auth.claims[groups]: values [dev] are not in [admin]",
        ),
        (
            when("request.auth.claims[org][team]", &[], &["red"]),
            "when[0] request.auth.claims[org][team]: value red is in notValues [red]",
        ),
        (
            when("request.auth.claims[roles]", &["admin"], &[]),
            "when[0] request.auth.claims[roles]: claim [roles] absent, so not in [admin]",
        ),
        (
            when("request.headers[x-role]", &["admin"], &[]),
            "when[0] request.headers[x-role]: values [dev, ops] are not in [admin]",
        ),
        (
            when("request.headers[x-role]", &[], &["admin", "op*"]),
            "when[0] request.headers[x-role]: value ops is in notValues [admin, op*]",
        ),
        (
            when("request.headers[x-tenant]", &["a"], &[]),
            "when[0] request.headers[x-tenant]: header x-tenant absent, so not in [a]",
        ),
        (
            when("request.headers[:authority]", &["shop.example.com"], &[]),
            "when[0] request.headers[:authority]: authority example.com is not in \
             [shop.example.com]",
        ),
        (
            when("source.ip", &[], &["10.0.0.0/8"]),
            "when[0] source.ip: source address 10.0.0.1 is in notValues [10.0.0.0/8]",
        ),
        (
            when("remote.ip", &["192.168.1.1"], &[]),
            "when[0] remote.ip: remote address 10.0.0.1 is not in [192.168.1.1]",
        ),
        (
            when("source.namespace", &["shop"], &[]),
            "when[0] source.namespace: peer namespace web is not in [shop]",
        ),
        (
            when("source.principal", &[], &["cluster.local/ns/web/*"]),
            "when[0] source.principal: peer cluster.local/ns/web/sa/frontend is in notValues \
             [cluster.local/ns/web/*]",
        ),
        (
            when(
                "request.auth.principal",
                &["https://idp.example.com/bob"],
                &[],
            ),
            "when[0] request.auth.principal: request principal https://idp.example.com/alice is \
             not in [https://idp.example.com/bob]",
        ),
        (
            when("request.auth.audiences", &["admin-api"], &[]),
            "when[0] request.auth.audiences: values [orders, billing] are not in [admin-api]",
        ),
        (
            when("request.auth.presenter", &["mobile"], &[]),
            "when[0] request.auth.presenter: presenter web is not in [mobile]",
        ),
        (
            when("destination.port", &["443"], &[]),
            "when[0] destination.port: port 8080 is not in [443]",
        ),
        (
            when("connection.sni", &[], &["*.example.com"]),
            "when[0] connection.sni: SNI api.example.com is in notValues [*.example.com]",
        ),
    ];
    for (rule, want) in cases {
        assert_eq!(failure(rule.clone(), &f), *want, "{rule}");
    }

    // Without a token, every request.auth key says so.
    f.identity = None;
    assert_eq!(
        failure(when("request.auth.claims[groups]", &["admin"], &[]), &f),
        "when[0] request.auth.claims[groups]: no request principal (no verified JWT), so not in \
         [admin]"
    );
    assert_eq!(
        failure(when("request.auth.presenter", &["web"], &[]), &f),
        "when[0] request.auth.presenter: no request principal (no verified JWT), so not in [web]"
    );
    f.sni = None;
    assert_eq!(
        failure(when("connection.sni", &["api.example.com"], &[]), &f),
        "when[0] connection.sni: no SNI, so not in [api.example.com]"
    );
}

#[test]
fn path_conditions_report_the_readings_that_failed() {
    let h = [];
    let mut f = facts(&h);
    f.path = Some("/a/../admin?debug=1");
    let key = "request.headers[:path]";
    // ALLOW needs both readings: the one with the query fails.
    assert_eq!(
        failure(when(key, &["/admin"], &[]), &f),
        "when[0] request.headers[:path]: path with query /admin?debug=1 (normalized) is not in \
         [/admin] (an ALLOW condition must hold with and without the query)"
    );
    // DENY holds on either reading, so it fails only when both do.
    assert_eq!(
        failure_with(json!({}), "DENY", when(key, &["/health"], &[]), &f),
        "when[0] request.headers[:path]: path /admin (normalized) is not in [/health]; and path \
         with query /admin?debug=1 (normalized) is not in [/health]"
    );
    let e = explain(
        &compile(json!({"requireMtls": false, "policies": [
            {"name": "d", "action": "DENY", "rules": [{"when": [{"key": key, "values": ["/admin"]}]}]}]})),
        &f,
    );
    assert!(e.policies[0].rules[0].matched, "DENY: one reading suffices");
    assert_eq!(e.deciding_rule, Some(0));
    // notValues, no query: one reading.
    f.path = Some("/admin");
    assert_eq!(
        failure(when(key, &[], &["/admin"]), &f),
        "when[0] request.headers[:path]: path /admin (normalized) is in notValues [/admin]"
    );
}

#[test]
fn the_first_failing_part_is_reported_from_then_to_then_when() {
    let h = [];
    let mut f = facts(&h);
    f.method = Some("POST");
    let everything_fails = json!({
        "from": [{"source": {"namespaces": ["shop"], "principals": ["cluster.local/ns/shop/sa/a"]}}],
        "to": [{"operation": {"methods": ["GET"], "hosts": ["shop.example.com"]}}],
        "when": [{"key": "request.headers[x-role]", "values": ["admin"]}],
    });
    assert_eq!(
        failure(everything_fails, &f),
        "from[0].source.principals: peer cluster.local/ns/web/sa/frontend is not in \
         [cluster.local/ns/shop/sa/a]"
    );
    // Within a source: principals, notPrincipals, requestPrincipals, … namespaces.
    assert_eq!(
        failure(
            from(
                json!({"namespaces": ["shop"], "notPrincipals": ["*"], "requestPrincipals": ["*"]})
            ),
            &f
        ),
        "from[0].source.notPrincipals: peer cluster.local/ns/web/sa/frontend is in [*]"
    );
    assert_eq!(
        failure(
            from(json!({"namespaces": ["shop"], "requestPrincipals": ["*"]})),
            &f
        ),
        "from[0].source.requestPrincipals: no request principal (no verified JWT), so not in [*]"
    );
    // Within an operation: hosts, ports, methods, paths.
    assert_eq!(
        failure(
            to(json!({"paths": ["/x"], "methods": ["GET"], "notPorts": ["8080"]})),
            &f
        ),
        "to[0].operation.notPorts: port 8080 is in [8080]"
    );
    // `from` holds, `to` fails before `when`.
    assert_eq!(
        failure(
            json!({"from": [{"source": {"namespaces": ["web"]}}],
                   "to": [{"operation": {"methods": ["GET"]}}],
                   "when": [{"key": "request.headers[x-role]", "values": ["admin"]}]}),
            &f
        ),
        "to[0].operation.methods: method POST is not in [GET]"
    );
    // Several entries, none holds: the first's failure, and the others counted.
    assert_eq!(
        failure(
            json!({"from": [{"source": {"namespaces": ["shop"]}}, {"source": {"namespaces": ["pay"]}}]}),
            &f
        ),
        "from[0].source.namespaces: peer namespace web is not in [shop] (and from[1] failed too)"
    );
    assert_eq!(
        failure(
            json!({"to": [{"operation": {"methods": ["GET"]}}, {"operation": {"methods": ["PUT"]}},
                          {"operation": {"ports": ["1"]}}]}),
            &f
        ),
        "to[0].operation.methods: method POST is not in [GET] (and to[1..2] failed too)"
    );
    // One entry holds: the list holds, the next part is reported.
    assert_eq!(
        failure(
            json!({"from": [{"source": {"namespaces": ["shop"]}}, {"source": {"namespaces": ["web"]}}],
                   "when": [{"key": "request.headers[x-role]", "values": ["admin"]}]}),
            &f
        ),
        "when[0] request.headers[x-role]: header x-role absent, so not in [admin]"
    );
    // The second `when` is reported when the first holds.
    assert_eq!(
        failure(
            json!({"when": [{"key": "source.namespace", "values": ["web"]},
                            {"key": "destination.port", "notValues": ["8080"]}]}),
            &f
        ),
        "when[1] destination.port: port 8080 is in notValues [8080]"
    );
}

#[test]
fn deny_allow_and_audit_are_traced_with_the_deciding_rule() {
    let config = compile(json!({"policies": [
        {"name": "audit-writes", "action": "AUDIT", "rules": [
            {"to": [{"operation": {"methods": ["GET"]}}]}, {"to": [{"operation": {"methods": ["POST"]}}]}]},
        {"name": "deny-external-admin", "action": "DENY", "rules": [
            {"from": [{"source": {"notNamespaces": ["web", "ops"]}}]},
            {"to": [{"operation": {"paths": ["/admin/*"]}}]}]},
        {"name": "allow-web", "rules": [
            {"from": [{"source": {"namespaces": ["shop"]}}]},
            {"from": [{"source": {"namespaces": ["web"]}}]}]},
    ]}));
    let h = [];
    let mut f = facts(&h);
    f.method = Some("POST");
    let e = explain(&config, &f);
    assert!(e.decision.allowed);
    assert_eq!(e.decision.matched_policy, Some(2));
    assert_eq!(e.decision.audit_matched, vec![0]);
    assert_eq!(e.deciding_rule, Some(1));
    let names: Vec<&str> = e.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["audit-writes", "deny-external-admin", "allow-web"]);
    assert_eq!(
        e.policies.iter().map(|p| p.action).collect::<Vec<_>>(),
        [Action::Audit, Action::Deny, Action::Allow]
    );
    assert!(e.policies[0].matched && !e.policies[1].matched && e.policies[2].matched);
    assert_eq!(
        e.policies[0].rules[0].failed.as_ref().unwrap().to_string(),
        "to[0].operation.methods: method POST is not in [GET]"
    );
    assert!(e.policies[0].rules[1].matched && e.policies[0].rules[1].failed.is_none());
    assert_eq!(
        e.policies[1].rules[0].failed.as_ref().unwrap().to_string(),
        "from[0].source.notNamespaces: peer namespace web is in [web, ops] (matches web)"
    );
    assert_eq!(
        e.policies[1].rules[1].failed.as_ref().unwrap().to_string(),
        "to[0].operation.paths: path /api/v1/items (normalized) is not in [/admin/*]"
    );

    f.path = Some("/admin/users");
    let e = explain(&config, &f);
    assert!(!e.decision.allowed);
    assert_eq!(e.decision.deny, Some(DenyReason::DenyPolicy(1)));
    assert_eq!(e.deciding_rule, Some(1));
    assert!(
        e.policies[2].matched,
        "ALLOW is traced even when DENY decided"
    );

    f.peer = Some(SpiffeId::parse("spiffe://cluster.local/ns/ops/sa/x").unwrap());
    f.path = Some("/");
    let e = explain(&config, &f);
    assert_eq!(e.decision.deny, Some(DenyReason::NoAllowMatched));
    assert_eq!(e.deciding_rule, None);
    assert_eq!(
        e.policies[2].rules[1].failed.as_ref().unwrap().to_string(),
        "from[0].source.namespaces: peer namespace ops is not in [web]"
    );
}

#[test]
fn dry_run_explains_what_would_be_enforced() {
    let config = compile(json!({"dryRun": true, "policies": [
        {"name": "deny-post", "action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]}]}));
    let h = [];
    let mut f = facts(&h);
    f.method = Some("POST");
    let e = explain(&config, &f);
    assert!(e.decision.allowed && e.decision.dry_run_would_deny);
    assert_eq!(e.decision.matched_policy, Some(0));
    assert_eq!(e.deciding_rule, Some(0));
}

#[test]
fn preconditions_stop_before_policies() {
    let deny_all = json!({"policies": [{"name": "p", "action": "DENY", "rules": [{}]}]});
    let h = [];
    let mut f = facts(&h);
    f.mtls = false;
    let e = explain(&compile(deny_all.clone()), &f);
    assert_eq!(e.decision.deny, Some(DenyReason::NoVerifiedPeer));
    assert_eq!(
        e.stopped_before_policies.as_deref(),
        Some("no verified SPIFFE peer (requireMtls): the connection is not mTLS")
    );
    assert!(e.policies.is_empty() && e.deciding_rule.is_none());
    f.mtls = true;
    f.peer = None;
    assert_eq!(
        explain(&compile(deny_all), &f)
            .stopped_before_policies
            .as_deref(),
        Some("no verified SPIFFE peer (requireMtls): the peer certificate has no valid SPIFFE URI SAN")
    );

    let f = PlainFacts {
        path: Some("/a%2Fb"),
        ..facts(&h)
    };
    let paths = compile(
        json!({"policies": [{"name": "p", "rules": [{"to": [{"operation": {"paths": ["/a/*"]}}]}]}]}),
    );
    let e = explain(&paths, &f);
    assert_eq!(
        e.decision.deny,
        Some(DenyReason::BadPath(PathError::EscapedSlash))
    );
    assert_eq!(
        e.stopped_before_policies.as_deref(),
        Some("path refused: escaped slash or backslash (%2F, %5C) in path (/a%2Fb)")
    );
    let f = PlainFacts {
        path: None,
        ..facts(&h)
    };
    assert_eq!(
        explain(&paths, &f).stopped_before_policies.as_deref(),
        Some("path refused: missing :path")
    );

    let underscored = [("x_role".to_string(), b"admin".to_vec())];
    let role = compile(
        json!({"policies": [{"name": "p", "action": "DENY", "rules": [
        {"when": [{"key": "request.headers[x-role]", "values": ["admin"]}]}]}]}),
    );
    let e = explain(&role, &facts(&underscored));
    assert_eq!(e.decision.deny, Some(DenyReason::AmbiguousHeader));
    assert_eq!(
        e.stopped_before_policies.as_deref(),
        Some("header x_role is another spelling of x-role")
    );

    let hosts = compile(
        json!({"policies": [{"name": "p", "rules": [{"to": [{"operation": {"hosts": ["a"]}}]}]}]}),
    );
    let f = PlainFacts {
        host: None,
        ..facts(&h)
    };
    let e = explain(&hosts, &f);
    assert_eq!(e.decision.deny, Some(DenyReason::Unavailable(":authority")));
    assert_eq!(
        e.stopped_before_policies.as_deref(),
        Some("`:authority` is unavailable and a policy needs it")
    );
}

/// Explain agrees with `decide` and with every compiled rule, over the product of a few
/// requests and a few mixed configs.
#[test]
fn explain_agrees_with_decide() {
    let configs = [
        json!({"requireMtls": false, "policies": [
            {"name": "audit-admin", "action": "AUDIT", "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]},
            {"name": "deny-external-admin", "action": "DENY", "rules": [
                {"from": [{"source": {"notNamespaces": ["ops"]}}], "to": [{"operation": {"paths": ["/admin/*"]}}]}]},
            {"name": "deny-dev-writes", "action": "DENY", "rules": [
                {"to": [{"operation": {"notMethods": ["GET", "HEAD"]}}],
                 "when": [{"key": "request.auth.claims[groups]", "values": ["dev"]}]}]},
            {"name": "allow-web", "rules": [
                {"from": [{"source": {"namespaces": ["web"]}}, {"source": {"requestPrincipals": ["https://idp.example.com/*"]}}],
                 "to": [{"operation": {"methods": ["GET"]}}, {"operation": {"paths": ["/api/{**}"]}}]},
                {"when": [{"key": "request.headers[x-role]", "values": ["admin"]}]}]},
            {"name": "allow-ops", "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/ops/*"]}}]}]},
        ]}),
        json!({"requireMtls": false, "policies": [
            {"name": "deny-query-admin", "action": "DENY", "rules": [
                {"when": [{"key": "request.headers[:path]", "values": ["/admin/x?*"]}]}]},
            {"name": "allow-exact", "rules": [
                {"when": [{"key": "request.headers[:path]", "notValues": ["*?debug=1"]},
                          {"key": "request.headers[:authority]", "values": ["example.com"]}]},
                {"to": [{"operation": {"hosts": ["shop.example.com"], "notPaths": ["/admin/*"]}}]}]},
            {"name": "audit-all", "action": "AUDIT", "rules": [{}]},
        ]}),
        json!({"requireMtls": false, "policies": [
            {"name": "deny-role-dev", "action": "DENY", "rules": [
                {"when": [{"key": "request.headers[x-role]", "notValues": ["admin", "ops"]},
                          {"key": "source.principal", "values": ["*"]}]}]},
            {"name": "audit-jwt", "action": "AUDIT", "rules": [
                {"from": [{"source": {"notRequestPrincipals": ["*"]}}]},
                {"when": [{"key": "request.auth.audiences", "values": ["orders"]}]}]},
        ]}),
        // requireMtls: requests without a peer stop before policies.
        json!({"policies": [{"name": "allow-web-get", "rules": [
            {"from": [{"source": {"namespaces": ["web"]}}], "to": [{"operation": {"methods": ["GET"]}}]}]}]}),
    ];
    let alice = alice();
    let peers = [
        None,
        Some("spiffe://cluster.local/ns/web/sa/frontend"),
        Some("spiffe://cluster.local/ns/ops/sa/admin"),
    ];
    let paths = ["/api/v1/items", "/admin/x?debug=1", "/admin/x", "/health"];
    let roles: [&[(String, Vec<u8>)]; 3] = [
        &[],
        &[("x-role".to_string(), b"admin".to_vec())],
        &[("x-role".to_string(), b"dev".to_vec())],
    ];
    let mut checked = 0usize;
    let mut decided_by_rule = 0usize;
    let mut stopped = 0usize;
    for raw in &configs {
        let config = compile(raw.clone());
        for peer in peers {
            for method in ["GET", "POST"] {
                for path in paths {
                    for host in ["example.com", "shop.example.com:443"] {
                        for identity in [None, Some(&alice)] {
                            for headers in roles {
                                let f = PlainFacts {
                                    mtls: peer.is_some(),
                                    peer: peer.map(|p| SpiffeId::parse(p).unwrap()),
                                    method: Some(method),
                                    path: Some(path),
                                    host: Some(host),
                                    identity,
                                    ..facts(headers)
                                };
                                let e = explain(&config, &f);
                                agree(&config, &f, &e);
                                checked += 1;
                                decided_by_rule += usize::from(e.deciding_rule.is_some());
                                stopped += usize::from(e.stopped_before_policies.is_some());
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 500);
    // The sample exercises both outcomes.
    assert!(
        decided_by_rule > 50 && decided_by_rule < checked,
        "{decided_by_rule}"
    );
    assert!(stopped > 0 && stopped < checked, "{stopped}");
}

fn agree(config: &Config, f: &PlainFacts<'_>, e: &Explanation) {
    let d = decide(config, f);
    assert_eq!(e.decision, d, "{f:?}");
    let prepared = match config.prepare(f) {
        Ok(p) => p,
        Err((reason, _)) => {
            assert_eq!(d.deny, Some(reason));
            assert!(e.stopped_before_policies.is_some());
            assert!(e.policies.is_empty() && e.deciding_rule.is_none());
            return;
        }
    };
    assert_eq!(e.stopped_before_policies, None);
    let ctx = prepared.ctx();
    assert_eq!(e.policies.len(), config.policies.len());
    for (trace, policy) in e.policies.iter().zip(&config.policies) {
        let any_reading = policy.action != Action::Allow;
        for (rule_trace, rule) in trace.rules.iter().zip(&policy.rules) {
            assert_eq!(
                rule_trace.matched,
                rule.matches(&ctx, any_reading),
                "{} rules[{}] {f:?}",
                trace.name,
                rule_trace.index
            );
            assert_eq!(rule_trace.failed.is_none(), rule_trace.matched);
            if let Some(failure) = &rule_trace.failed {
                assert!(!failure.field.is_empty() && !failure.message.is_empty());
            }
        }
        assert_eq!(trace.matched, trace.rules.iter().any(|r| r.matched));
    }
    // The deciding policy, from the traces alone, as `decide` orders them.
    let first = |action: Action| {
        e.policies
            .iter()
            .position(|p| p.action == action && p.matched)
    };
    let has_allow = e.policies.iter().any(|p| p.action == Action::Allow);
    let deciding = first(Action::Deny).or_else(|| first(Action::Allow).filter(|_| has_allow));
    assert_eq!(deciding, d.matched_policy, "{f:?}");
    let audits: Vec<usize> = e
        .policies
        .iter()
        .filter(|p| p.action == Action::Audit && p.matched)
        .map(|p| p.index)
        .collect();
    assert_eq!(audits, d.audit_matched);
    match (d.matched_policy, e.deciding_rule) {
        (Some(p), Some(r)) => assert!(e.policies[p].rules[r].matched),
        (None, None) => {}
        other => panic!("deciding rule {other:?}"),
    }
}
