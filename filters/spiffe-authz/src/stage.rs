//! The spiffe-authz stage: per request, read only what the compiled policies need
//! ([`spiffe_authz_core::Needs`]) from a [`RequestView`] — the peer identity only from connection
//! properties, never from a header such as `x-forwarded-client-cert` — ask the core for a
//! decision, count it, log refusals naming the policy, and either answer locally (403
//! `RBAC: access denied`, or 400 for a refused path or a header-name spelling of a policy header)
//! or let the request go on, with `:path` replaced by the normalized path when it differs.
//! A host call that fails where the decision needs it denies the request (fail closed).
//! The standalone filter (`lib.rs`) and the bundle (`meshward.wasm`) both run it.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use meshward_common::header_name;
use meshward_common::identity::{RequestIdentity, PROPERTY_PATH};
use meshward_common::logtext;
use meshward_common::spiffe::SpiffeId;
use meshward_host::{Counters, RequestView, StageResult, Status};
use spiffe_authz_core::{
    decide, Config, Decision, DenyReason, Needs, RequestFacts, BAD_REQUEST_BODY, DENY_BODY,
};

/// The filter's name: its log prefix and its counters' owner.
pub const NAME: &str = "spiffe-authz";

/// One configured spiffe-authz: the compiled policies and their counters (per VM).
pub struct Stage {
    config: Config,
    /// The fixed counters (indices below), then one per policy in config order.
    counters: Counters,
    memos: Memos,
}

/// The last value this VM parsed from some bytes, kept by those exact bytes. Requests on one
/// connection carry the same peer URI SAN, and a warm token publishes the same identity bytes on
/// every request: parsing them (a SPIFFE ID's validation, the identity's JSON) was a large part
/// of reading the facts in profiles of the bundle. The same bytes always parse to the same
/// value, so the memo answers only what parsing would; it holds one value (bounded memory), and
/// keeps nothing that did not parse to a value.
pub(crate) struct LastParsed<T>(RefCell<Option<(Vec<u8>, Rc<T>)>>);

impl<T> Default for LastParsed<T> {
    fn default() -> Self {
        Self(RefCell::new(None))
    }
}

impl<T> LastParsed<T> {
    /// `parse(bytes)`, shared when `bytes` are the last ones that parsed to a value.
    fn get_or_parse<E>(
        &self,
        bytes: &[u8],
        parse: impl FnOnce(&[u8]) -> Result<Option<T>, E>,
    ) -> Result<Option<Rc<T>>, E> {
        if let Ok(memo) = self.0.try_borrow() {
            if let Some((seen, value)) = memo.as_ref() {
                if seen.as_slice() == bytes {
                    return Ok(Some(Rc::clone(value)));
                }
            }
        }
        let Some(value) = parse(bytes)?.map(Rc::new) else {
            return Ok(None);
        };
        if let Ok(mut memo) = self.0.try_borrow_mut() {
            *memo = Some((bytes.to_vec(), Rc::clone(&value)));
        }
        Ok(Some(value))
    }
}

/// What a stage keeps between requests to read the facts faster (per VM; see [`LastParsed`]).
#[derive(Default)]
pub(crate) struct Memos {
    /// The published request identity.
    identities: LastParsed<RequestIdentity>,
    /// The peer's URI SAN as a SPIFFE ID.
    peers: LastParsed<SpiffeId>,
}

impl Memos {
    /// [`RequestIdentity::read`] of published bytes.
    fn identity(
        &self,
        bytes: Option<&[u8]>,
    ) -> Result<Option<Rc<RequestIdentity>>, meshward_common::identity::UnreadableIdentity> {
        match bytes {
            Some(bytes) => self
                .identities
                .get_or_parse(bytes, |b| RequestIdentity::read(Some(b))),
            None => Ok(None),
        }
    }

    /// The peer's URI SAN as a strictly valid SPIFFE ID; `None` (logged) when it is not one.
    fn peer(&self, san: &str) -> Option<Rc<SpiffeId>> {
        let parsed = self.peers.get_or_parse(san.as_bytes(), |_| {
            Ok::<_, std::convert::Infallible>(match SpiffeId::parse(san) {
                Ok(id) => Some(id),
                Err(e) => {
                    log::info!(
                        "spiffe-authz: peer URI SAN is not a valid SPIFFE ID ({e}); no peer \
                         identity"
                    );
                    None
                }
            })
        });
        parsed.ok().flatten()
    }
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

impl Stage {
    /// The stage for a parsed config: defines the counters, logs what was configured.
    pub fn new(config: Config) -> Self {
        let counters = define_counters(&config);
        log::info!(
            "spiffe-authz: configured {} policies{}",
            config.policy_count(),
            if config.dry_run() { " (dry run)" } else { "" }
        );
        Self {
            config,
            counters,
            memos: Memos::default(),
        }
    }

    /// Decide on the request: `Continue` (possibly after rewriting `:path`) or `Replied`.
    pub fn on_request_headers(&self, req: &mut RequestView) -> StageResult {
        match read_and_decide(&self.config, &self.memos, req) {
            Ok(decision) => act(self, &decision, req),
            Err(failure) if self.config.dry_run() => {
                log::info!("spiffe-authz: dry run: would deny: {failure}");
                self.counters.increment(DRY_RUN_WOULD_DENY);
                self.counters.increment(ALLOWED);
                StageResult::Continue
            }
            Err(failure) => {
                log::warn!("spiffe-authz: denied: {failure}");
                self.counters.increment(DENIED);
                deny(403, "spiffe_authz_host_failure", DENY_BODY)
            }
        }
    }
}

/// A request that arrives without a configuration (Envoy does not create one then): denied.
pub fn unconfigured() -> StageResult {
    log::error!("spiffe-authz: denied: the filter has no configuration");
    deny(403, "spiffe_authz_unconfigured", DENY_BODY)
}

/// Read what the policies need and decide.
fn read_and_decide(
    config: &Config,
    memos: &Memos,
    req: &mut RequestView,
) -> Result<Decision, HostFailure> {
    let facts = HostFacts::read(config.needs(), memos, req)?;
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
        "spiffe-authz: {prefix}{}; peer={} method={} path={}",
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
pub(crate) fn bounded(value: &str) -> String {
    let (text, cut) = logtext::loggable_cut(value, LOG_VALUE_MAX);
    if cut {
        format!("\"{text}\"({} bytes)", value.len())
    } else {
        format!("\"{text}\"")
    }
}

/// Count, rewrite or answer.
fn act(stage: &Stage, decision: &Decision, req: &mut RequestView) -> StageResult {
    let (config, counters) = (&stage.config, &stage.counters);
    let count_policy = |i: usize| counters.increment(POLICY_MATCHED.saturating_add(i));
    if let Some(i) = decision.matched_policy {
        count_policy(i);
    }
    for &i in &decision.audit_matched {
        count_policy(i);
        log::info!(
            "spiffe-authz: AUDIT policy `{}` matched",
            config.policy_name(i)
        );
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
        if let Err(status) = req.replace_header(b":path", target.as_bytes()) {
            log::warn!(
                "spiffe-authz: denied: cannot forward the normalized path (host status {status})"
            );
            counters.increment(DENIED);
            return deny(403, "spiffe_authz_path_rewrite_failed", DENY_BODY);
        }
    }
    counters.increment(ALLOWED);
    StageResult::Continue
}

/// Envoy's RBAC detail, `rbac_access_denied_matched_policy[<name>]`, under our own prefix.
fn details_for(policy: &str) -> String {
    format!("spiffe_authz_access_denied_matched_policy[{policy}]")
}

pub fn deny(status: u16, details: &str, body: &str) -> StageResult {
    let headers = [("content-type", "text/plain")];
    if let Err(s) = meshward_host::send_local_response(
        u32::from(status),
        details,
        body.as_bytes(),
        &headers,
        None,
    ) {
        // Nothing else can answer; keep the request paused (it times out) rather than continue.
        log::error!(
            "spiffe-authz: cannot send the {status} reply (host status {s}); request stays paused"
        );
    }
    StageResult::Replied
}

/// A host call that failed, for the log.
pub(crate) struct HostFailure {
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
pub(crate) struct HostFacts {
    /// A URI SAN was presented, hence a client certificate: see [`HostFacts::read`].
    pub(crate) mtls: bool,
    pub(crate) peer: Option<Rc<SpiffeId>>,
    method: Option<String>,
    path: Option<String>,
    host: Option<String>,
    destination_port: Option<u16>,
    pub(crate) source_ip: Option<IpAddr>,
    destination_ip: Option<IpAddr>,
    headers: Vec<(String, Vec<u8>)>,
    identity: Option<Rc<RequestIdentity>>,
    identity_unreadable: bool,
    sni: Option<String>,
}

/// The property at `path` when the policies need it (`what` names it in a failure).
fn property(
    req: &mut RequestView,
    path: &'static [&'static str],
    what: &'static str,
    needed: bool,
) -> Result<Option<Vec<u8>>, HostFailure> {
    if needed {
        req.property(path)
            .map(|v| v.map(<[u8]>::to_vec))
            .map_err(fail(what))
    } else {
        Ok(None)
    }
}

impl HostFacts {
    pub(crate) fn read(
        needs: &Needs,
        memos: &Memos,
        req: &mut RequestView,
    ) -> Result<Self, HostFailure> {
        let text = |v: Option<Vec<u8>>| v.and_then(|b| String::from_utf8(b).ok());

        // The peer's URI SAN alone: Envoy has one only from a client certificate the connection
        // presented (what `connection.mtls` says), and the core reads `mtls` only to grant a
        // peer identity, which needs the SAN anyway. So `connection.mtls` is not read: a
        // property read that returns a value is two crossings in Envoy (`meshward bench abi`).
        let san = text(property(
            req,
            &["connection", "uri_san_peer_certificate"],
            "connection.uri_san_peer_certificate",
            needs.peer,
        )?);
        let mtls = san.is_some();
        // Only the first URI SAN is visible to wasm; it must be a strictly valid SPIFFE ID.
        let peer = san.and_then(|s| memos.peer(&s));
        // When the policies need header lines, the whole map is read (once, by the view), and
        // `:method`, `:path` and `:authority` come from it too instead of one host read each (a
        // read that returns a value is two crossings in Envoy: the call, then the guest
        // allocation for the value).
        let headers = if needs.headers.is_empty() {
            Vec::new()
        } else {
            let pairs = req.headers().map_err(fail("request headers"))?;
            select_headers(&pairs, &needs.headers).ok_or(HostFailure {
                what: "request headers",
                status: Status::SERIALIZATION_FAILURE,
            })?
        };
        let mut header =
            |name: &'static str, needed: bool| -> Result<Option<String>, HostFailure> {
                if !needed {
                    return Ok(None);
                }
                // The first value, as `proxy_get_header_map_value` returns.
                Ok(text(req.header(name).map_err(fail(name))?))
            };
        let method = header(":method", needs.method)?;
        let path = header(":path", needs.path)?;
        let host = header(":authority", needs.host)?;
        let destination_port = property(
            req,
            &["destination", "port"],
            "destination.port",
            needs.destination_port,
        )?
        .and_then(|b| meshward_host::property::decode_u64(&b))
        .and_then(|p| u16::try_from(p).ok());
        let source_ip = text(property(
            req,
            &["source", "address"],
            "source.address",
            needs.source_ip,
        )?)
        .and_then(|a| parse_address(&a));
        let destination_ip = text(property(
            req,
            &["destination", "address"],
            "destination.address",
            needs.destination_ip,
        )?)
        .and_then(|a| parse_address(&a));
        // Published bytes that do not parse are not "no identity": the core denies when a policy
        // needs the identity and it is unreadable (a DENY on request principals must not fail
        // open). In the bundle, jwt-authn's identity is known to the view without a host read.
        let published = property(req, PROPERTY_PATH, "meshward_request_auth", needs.identity)?;
        let (identity, identity_unreadable) = match memos.identity(published.as_deref()) {
            Ok(identity) => (identity, false),
            Err(_) => (None, true),
        };
        let sni = text(property(
            req,
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
            destination_ip,
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
        self.peer.as_deref()
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
    fn destination_ip(&self) -> Option<IpAddr> {
        self.destination_ip
    }
    fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }
    fn identity(&self) -> Option<&RequestIdentity> {
        self.identity.as_deref()
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
pub(crate) fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse::<SocketAddr>()
        .map(|s| s.ip())
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_memo_parses_each_new_value_once_and_never_keeps_a_bad_one() {
        let memo = Memos::default();
        let alice = br#"{"principal":"https://idp/alice","iss":"https://idp","sub":"alice"}"#;
        let bob = br#"{"principal":"https://idp/bob","iss":"https://idp","sub":"bob"}"#;
        assert!(memo.identity(None).unwrap().is_none());
        let first = memo.identity(Some(alice)).unwrap().unwrap();
        let again = memo.identity(Some(alice)).unwrap().unwrap();
        assert!(Rc::ptr_eq(&first, &again), "the same bytes are parsed once");
        assert_eq!(first.principal, "https://idp/alice");
        let other = memo.identity(Some(bob)).unwrap().unwrap();
        assert_eq!(other.principal, "https://idp/bob");
        // Unreadable bytes are an error every time, whatever was parsed before.
        assert!(memo.identity(Some(b"{not json")).is_err());
        assert!(memo.identity(Some(b"")).is_err());
        assert!(memo.identity(Some(b"{not json")).is_err());
        assert_eq!(
            memo.identity(Some(bob)).unwrap().unwrap().principal,
            "https://idp/bob"
        );
    }

    #[test]
    fn the_peer_memo_parses_each_new_san_once_and_never_keeps_an_invalid_one() {
        let memo = Memos::default();
        let frontend = "spiffe://cluster.local/ns/default/sa/frontend";
        let first = memo.peer(frontend).unwrap();
        let again = memo.peer(frontend).unwrap();
        assert!(Rc::ptr_eq(&first, &again), "the same SAN is parsed once");
        assert_eq!(first.namespace(), Some("default"));
        // An invalid SAN is no peer, every time, and does not displace nor match the last one.
        for bad in [
            "spiffe://cluster.local/ns/default/sa/frontend/",
            "http://x/y",
            "",
        ] {
            assert!(memo.peer(bad).is_none(), "{bad:?}");
        }
        let cart = memo.peer("spiffe://cluster.local/ns/shop/sa/cart").unwrap();
        assert_eq!(cart.namespace(), Some("shop"));
        assert!(!Rc::ptr_eq(&first, &cart));
        assert_eq!(memo.peer(frontend).unwrap().as_str(), frontend);
    }

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
        let Err(failure) =
            read_and_decide(&config, &Memos::default(), &mut RequestView::standalone())
        else {
            panic!("without a host the read must fail");
        };
        assert_eq!(failure.status, Status::UNIMPLEMENTED);
    }

    fn stage(config: &str) -> Stage {
        Stage::new(Config::parse(config.as_bytes()).unwrap())
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
    fn a_failed_host_read_is_answered_unless_dry_run() {
        let mut view = RequestView::standalone();
        assert_eq!(
            stage("{}").on_request_headers(&mut view),
            StageResult::Replied
        );
        assert_eq!(unconfigured(), StageResult::Replied);
        // A dry run never denies, not even on a host failure (it is counted as would-deny).
        let mut view = RequestView::standalone();
        assert_eq!(
            stage(r#"{"dryRun":true}"#).on_request_headers(&mut view),
            StageResult::Continue
        );
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
