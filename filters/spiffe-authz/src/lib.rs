//! meshward spiffe-authz: a thin proxy-wasm adapter over `spiffe_authz_core`.
//!
//! Per request it reads only what the compiled policies need ([`spiffe_authz_core::Needs`]) from
//! the host — the peer identity only from connection properties, never from a header such as
//! `x-forwarded-client-cert` — asks the core for a decision, counts it, logs refusals naming the
//! policy, and either answers locally (403 `RBAC: access denied`, or 400 for a refused path or a
//! header-name spelling of a policy header) or lets the request go on, with `:path` replaced by
//! the normalized path when it differs.
//! A host call that fails where the decision needs it denies the request (fail closed).
//!
//! Every host call goes through `meshward_host`, which returns statuses as values: the SDK's own
//! wrappers `panic!` on statuses they do not expect, and a panic in an authorization filter either
//! 503s every later request or, with `fail_open`, skips the filter.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use meshward_common::header_name;
use meshward_common::identity::{RequestIdentity, PROPERTY_PATH};
use meshward_common::logtext;
use meshward_common::spiffe::SpiffeId;
use meshward_host::{wire, Counters, MapType, Status};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use spiffe_authz_core::{
    decide, Config, Decision, DenyReason, Needs, RequestFacts, BAD_REQUEST_BODY, DENY_BODY,
};

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    meshward_host::init_logger(log::LevelFilter::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// The root context: the compiled policies and their counters, shared by the request contexts of
/// this VM.
#[derive(Default)]
pub struct Root {
    configured: Option<Rc<Configured>>,
}

/// What every request of a configured plugin shares.
struct Configured {
    config: Config,
    /// The fixed counters (indices below), then one per policy in config order.
    counters: Counters,
}

const ALLOWED: usize = 0;
const DENIED: usize = 1;
const BAD_PATH: usize = 2;
const BAD_HEADER: usize = 3;
const DRY_RUN_WOULD_DENY: usize = 4;
/// Counter of policy `i`: `spiffe_authz.policy.<name>.matched` at `POLICY_MATCHED + i`.
const POLICY_MATCHED: usize = 5;

/// Define every counter (at configure time, so they exist, at 0, before the first request).
fn define_counters(config: &Config) -> Counters {
    let fixed = [
        "spiffe_authz.allowed",
        "spiffe_authz.denied",
        "spiffe_authz.bad_path",
        "spiffe_authz.bad_header",
        "spiffe_authz.dry_run.would_deny",
    ]
    .map(String::from);
    let per_policy = (0..config.policy_count())
        .map(|i| format!("spiffe_authz.policy.{}.matched", config.policy_name(i)));
    Counters::define("spiffe-authz", fixed.into_iter().chain(per_policy))
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(config) =
            meshward_host::configure("spiffe-authz", plugin_configuration_size, Config::parse)
        else {
            return false;
        };
        let counters = define_counters(&config);
        log::info!(
            "configured {} policies{}",
            config.policy_count(),
            if config.dry_run() { " (dry run)" } else { "" }
        );
        self.configured = Some(Rc::new(Configured { config, counters }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            configured: self.configured.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The per-request context.
pub struct Request {
    /// `None` only if the host created a request context without a successful configure: every
    /// request is then denied.
    configured: Option<Rc<Configured>>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(configured) = self.configured.clone() else {
            log::error!("denied: the filter has no configuration");
            return deny(403, "spiffe_authz_unconfigured", DENY_BODY);
        };
        match read_and_decide(&configured.config) {
            Ok(decision) => act(&configured, &decision),
            Err(failure) if configured.config.dry_run() => {
                log::info!("dry run: would deny: {failure}");
                configured.counters.increment(DRY_RUN_WOULD_DENY);
                configured.counters.increment(ALLOWED);
                Action::Continue
            }
            Err(failure) => {
                log::warn!("denied: {failure}");
                configured.counters.increment(DENIED);
                deny(403, "spiffe_authz_host_failure", DENY_BODY)
            }
        }
    }
}

/// Read what the policies need and decide.
fn read_and_decide(config: &Config) -> Result<Decision, HostFailure> {
    let facts = HostFacts::read(config.needs())?;
    let decision = decide(config, &facts);
    if decision.deny.is_some() {
        log_refusal(config, &decision, &facts);
    }
    Ok(decision)
}

fn log_refusal(config: &Config, decision: &Decision, facts: &HostFacts) {
    let peer = facts
        .peer
        .as_ref()
        .filter(|_| facts.mtls)
        .map_or("none", |p| p.as_str());
    let prefix = if decision.dry_run_would_deny {
        "dry run: would have "
    } else {
        ""
    };
    log::info!(
        "{prefix}{}; peer={} method={} path={}",
        config.describe(decision),
        bounded(peer),
        bounded(facts.method.as_deref().unwrap_or("-")),
        bounded(facts.path.as_deref().unwrap_or("-")),
    );
}

/// The most of one request value a log line carries, in bytes.
const LOG_VALUE_MAX: usize = logtext::MAX_LOGGED_CHARS;

/// A request value for a log line: quoted, escaped and bounded by [`logtext::loggable`] (a path
/// or header is attacker-controlled and must not forge log lines), with the original length noted
/// when it was cut.
fn bounded(value: &str) -> String {
    let (text, cut) = logtext::loggable_cut(value, LOG_VALUE_MAX);
    if cut {
        format!("\"{text}\"({} bytes)", value.len())
    } else {
        format!("\"{text}\"")
    }
}

/// Count, rewrite or answer.
fn act(configured: &Configured, decision: &Decision) -> Action {
    let (config, counters) = (&configured.config, &configured.counters);
    let count_policy = |i: usize| counters.increment(POLICY_MATCHED.saturating_add(i));
    if let Some(i) = decision.matched_policy {
        count_policy(i);
    }
    for &i in &decision.audit_matched {
        count_policy(i);
        log::info!("AUDIT policy `{}` matched", config.policy_name(i));
    }
    if decision.dry_run_would_deny {
        counters.increment(DRY_RUN_WOULD_DENY);
    }
    if !decision.allowed {
        let status = decision.status();
        counters.increment(match decision.deny {
            Some(DenyReason::BadPath(_)) => BAD_PATH,
            Some(DenyReason::AmbiguousHeader) => BAD_HEADER,
            _ => DENIED,
        });
        let (details, body) = match decision.deny {
            Some(DenyReason::BadPath(_)) => {
                ("spiffe_authz_invalid_path".to_string(), BAD_REQUEST_BODY)
            }
            Some(DenyReason::AmbiguousHeader) => (
                "spiffe_authz_ambiguous_header".to_string(),
                BAD_REQUEST_BODY,
            ),
            Some(DenyReason::DenyPolicy(i)) => (details_for(config.policy_name(i)), DENY_BODY),
            _ => (
                "spiffe_authz_access_denied_matched_policy[none]".to_string(),
                DENY_BODY,
            ),
        };
        return deny(status, &details, body);
    }
    if let Some(target) = &decision.rewrite_path {
        if let Err(status) =
            meshward_host::replace_map_value(MapType::HttpRequestHeaders, ":path", target)
        {
            log::warn!("denied: cannot forward the normalized path (host status {status})");
            counters.increment(DENIED);
            return deny(403, "spiffe_authz_path_rewrite_failed", DENY_BODY);
        }
    }
    counters.increment(ALLOWED);
    Action::Continue
}

/// Envoy's RBAC detail, `rbac_access_denied_matched_policy[<name>]`, under our own prefix.
fn details_for(policy: &str) -> String {
    format!("spiffe_authz_access_denied_matched_policy[{policy}]")
}

fn deny(status: u16, details: &str, body: &str) -> Action {
    let headers = [("content-type", "text/plain")];
    if let Err(s) = meshward_host::send_local_response(
        u32::from(status),
        details,
        body.as_bytes(),
        &headers,
        None,
    ) {
        // Nothing else can answer; keep the request paused (it times out) rather than continue.
        log::error!("cannot send the {status} reply (host status {s}); request stays paused");
    }
    Action::Pause
}

/// A host call that failed, for the log.
struct HostFailure {
    what: &'static str,
    status: Status,
}

impl std::fmt::Display for HostFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "reading {} failed (host status {})",
            self.what, self.status
        )
    }
}

fn fail(what: &'static str) -> impl Fn(Status) -> HostFailure {
    move |status| HostFailure { what, status }
}

/// The request as the host tells it: exactly what [`Needs`] lists, read before deciding.
///
/// Read up front rather than on demand: any needed fact the host will not hand over fails the
/// request closed (403, or counted in a dry run) whether or not the policies would have got to
/// it, and the first failure in this fixed order is the one logged.
#[derive(Debug, Default)]
struct HostFacts {
    mtls: bool,
    peer: Option<SpiffeId>,
    method: Option<String>,
    path: Option<String>,
    host: Option<String>,
    destination_port: Option<u16>,
    source_ip: Option<IpAddr>,
    headers: Vec<(String, Vec<u8>)>,
    identity: Option<RequestIdentity>,
    identity_unreadable: bool,
    sni: Option<String>,
}

impl HostFacts {
    fn read(needs: &Needs) -> Result<Self, HostFailure> {
        let text = |v: Option<Vec<u8>>| v.and_then(|b| String::from_utf8(b).ok());
        let property = |path: &[&str],
                        what: &'static str,
                        needed: bool|
         -> Result<Option<Vec<u8>>, HostFailure> {
            if needed {
                meshward_host::get_property(path).map_err(fail(what))
            } else {
                Ok(None)
            }
        };

        let mtls = property(&["connection", "mtls"], "connection.mtls", needs.peer)?
            .is_some_and(|b| b.first() == Some(&1));
        // Only the first URI SAN is visible to wasm; it must be a strictly valid SPIFFE ID.
        let peer = if mtls {
            let san = property(
                &["connection", "uri_san_peer_certificate"],
                "connection.uri_san_peer_certificate",
                true,
            )?;
            text(san).and_then(|s| match SpiffeId::parse(&s) {
                Ok(id) => Some(id),
                Err(e) => {
                    log::info!("peer URI SAN is not a valid SPIFFE ID ({e}); no peer identity");
                    None
                }
            })
        } else {
            None
        };
        // When the policies need header lines, the whole map is read once, and `:method`,
        // `:path` and `:authority` come from it too instead of one host read each (a read that
        // returns a value is two crossings in Envoy: the call, then the guest allocation for the
        // value).
        let raw = if needs.headers.is_empty() {
            None
        } else {
            Some(
                meshward_host::get_map_raw(MapType::HttpRequestHeaders)
                    .map_err(fail("request headers"))?,
            )
        };
        let pairs = match &raw {
            Some(raw) => Some(wire::decode_map(raw).ok_or(HostFailure {
                what: "request headers",
                status: Status::SERIALIZATION_FAILURE,
            })?),
            None => None,
        };
        let header = |name: &'static str, needed: bool| -> Result<Option<String>, HostFailure> {
            if !needed {
                return Ok(None);
            }
            let value = match &pairs {
                // The first value, as `proxy_get_header_map_value` returns.
                Some(pairs) => pairs
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                    .map(|(_, v)| v.to_vec()),
                None => meshward_host::get_map_value(MapType::HttpRequestHeaders, name)
                    .map_err(fail(name))?,
            };
            Ok(text(value))
        };
        let method = header(":method", needs.method)?;
        let path = header(":path", needs.path)?;
        let host = header(":authority", needs.host)?;
        let destination_port = property(
            &["destination", "port"],
            "destination.port",
            needs.destination_port,
        )?
        .and_then(|b| meshward_host::property::decode_u64(&b))
        .and_then(|p| u16::try_from(p).ok());
        let source_ip = text(property(
            &["source", "address"],
            "source.address",
            needs.source_ip,
        )?)
        .and_then(|a| parse_address(&a));
        let headers = match &pairs {
            Some(pairs) => select_headers(pairs, &needs.headers).ok_or(HostFailure {
                what: "request headers",
                status: Status::SERIALIZATION_FAILURE,
            })?,
            None => Vec::new(),
        };
        // Published bytes that do not parse are not "no identity": the core denies when a policy
        // needs the identity and it is unreadable (a DENY on request principals must not fail
        // open).
        let published = property(PROPERTY_PATH, "meshward_request_auth", needs.identity)?;
        let (identity, identity_unreadable) = match RequestIdentity::read(published.as_deref()) {
            Ok(identity) => (identity, false),
            Err(_) => (None, true),
        };
        let sni = text(property(
            &["connection", "requested_server_name"],
            "connection.requested_server_name",
            needs.sni,
        )?)
        .filter(|s| !s.is_empty());
        Ok(Self {
            mtls,
            peer,
            method,
            path,
            host,
            destination_port,
            source_ip,
            headers,
            identity,
            identity_unreadable,
            sni,
        })
    }
}

impl RequestFacts for HostFacts {
    fn mtls(&self) -> bool {
        self.mtls
    }
    fn peer(&self) -> Option<&SpiffeId> {
        self.peer.as_ref()
    }
    fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }
    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }
    fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
    fn destination_port(&self) -> Option<u16> {
        self.destination_port
    }
    fn source_ip(&self) -> Option<IpAddr> {
        self.source_ip
    }
    fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }
    fn identity(&self) -> Option<&RequestIdentity> {
        self.identity.as_ref()
    }
    fn identity_unreadable(&self) -> bool {
        self.identity_unreadable
    }
    fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }
}

/// The pairs whose names are in `wanted` after folding case and `_`/`-`
/// ([`header_name::same`], so the core sees, and refuses, `x_role` when a policy reads `x-role`),
/// as text names; `None` if any name is not UTF-8 (the caller fails closed).
fn select_headers(pairs: &[(&[u8], &[u8])], wanted: &[String]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut selected = Vec::new();
    for &(name, value) in pairs {
        let text = std::str::from_utf8(name).ok()?;
        if wanted.iter().any(|w| header_name::same(w.as_bytes(), name)) {
            selected.push((text.to_owned(), value.to_vec()));
        }
    }
    Some(selected)
}

/// `source.address` is `ip:port` (`[v6]:port`); a bare address is accepted too.
fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse::<SocketAddr>()
        .map(|s| s.ip())
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_values_are_escaped_and_bounded() {
        assert_eq!(bounded("/a"), "\"/a\"");
        assert_eq!(
            bounded("/a\r\nINFO forged\t\"x\"\\\u{1b}[31m"),
            "\"/a\\r\\nINFO forged\\t\\\"x\\\"\\\\\\x1b[31m\""
        );
        let long = format!("/{}", "é".repeat(10_000));
        let out = bounded(&long);
        assert!(out.len() <= LOG_VALUE_MAX + 32, "{}", out.len());
        assert!(out.ends_with("…\"(20001 bytes)"), "{out}");
        assert!(out.starts_with("\"/éé"));
        let escapes = bounded(&"\u{7}".repeat(1000));
        assert!(escapes.len() <= LOG_VALUE_MAX + 32);
        assert!(!escapes.contains('\u{7}'));
    }

    #[test]
    fn addresses_and_ports() {
        assert_eq!(
            parse_address("10.0.0.1:5555"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(parse_address("[::1]:80"), Some("::1".parse().unwrap()));
        assert_eq!(
            parse_address("127.0.0.2"),
            Some("127.0.0.2".parse().unwrap())
        );
        assert_eq!(parse_address("pipe:/x"), None);
        assert_eq!(
            details_for("deny-admin"),
            "spiffe_authz_access_denied_matched_policy[deny-admin]"
        );
    }

    #[test]
    fn native_builds_have_no_host_and_fail_closed() {
        let config = Config::parse(b"{}").unwrap();
        let Err(failure) = read_and_decide(&config) else {
            panic!("without a host the read must fail");
        };
        assert_eq!(failure.status, Status::UNIMPLEMENTED);
    }

    fn request(config: &str) -> Request {
        let config = Config::parse(config.as_bytes()).unwrap();
        let counters = define_counters(&config);
        Request {
            configured: Some(Rc::new(Configured { config, counters })),
        }
    }

    #[test]
    fn fixed_counters_then_one_per_policy() {
        let config = Config::parse(br#"{"policies":[{"name":"a"},{"name":"b"}]}"#).unwrap();
        let counters = define_counters(&config);
        assert_eq!(counters.len(), POLICY_MATCHED + 2);
        assert_eq!(counters.name(ALLOWED), Some("spiffe_authz.allowed"));
        assert_eq!(
            counters.name(DRY_RUN_WOULD_DENY),
            Some("spiffe_authz.dry_run.would_deny")
        );
        assert_eq!(
            counters.name(POLICY_MATCHED + 1),
            Some("spiffe_authz.policy.b.matched")
        );
    }

    #[test]
    fn a_configuration_the_host_will_not_hand_over_is_rejected() {
        let mut root = Root::default();
        assert!(!root.on_configure(2));
        assert!(root.configured.is_none());
    }

    #[test]
    fn a_failed_host_read_pauses_the_request_unless_dry_run() {
        assert_eq!(
            request("{}").on_http_request_headers(3, true),
            Action::Pause
        );
        let mut unconfigured = Request { configured: None };
        assert_eq!(unconfigured.on_http_request_headers(3, true), Action::Pause);
        // A dry run never denies, not even on a host failure (it is counted as would-deny).
        let mut dry = request(r#"{"dryRun":true}"#);
        assert_eq!(dry.on_http_request_headers(3, true), Action::Continue);
    }

    #[test]
    fn only_wanted_headers_are_kept_and_non_utf8_names_fail() {
        let wanted = vec!["x-team".to_string(), "X-Env".to_string()];
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b"X-Team", b"a"),
            (b"other", b"b"),
            (b"x-env", b"\xff"),
            (b"x-team", b"c"),
        ];
        assert_eq!(
            select_headers(&pairs, &wanted),
            Some(vec![
                ("X-Team".to_string(), b"a".to_vec()),
                ("x-env".to_string(), b"\xff".to_vec()),
                ("x-team".to_string(), b"c".to_vec()),
            ])
        );
        // Another spelling of a wanted name is selected too, for the core to refuse.
        let spelled: Vec<(&[u8], &[u8])> = vec![(b"x_team", b"a"), (b"X_ENV", b"b"), (b"x", b"c")];
        assert_eq!(
            select_headers(&spelled, &wanted),
            Some(vec![
                ("x_team".to_string(), b"a".to_vec()),
                ("X_ENV".to_string(), b"b".to_vec()),
            ])
        );
        let bad: Vec<(&[u8], &[u8])> = vec![(b"x-team", b"a"), (b"\xff", b"b")];
        assert_eq!(select_headers(&bad, &wanted), None);
        assert_eq!(select_headers(&[], &wanted), Some(Vec::new()));
    }
}
