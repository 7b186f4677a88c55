//! `meshward explain`: for one request, every policy, whether each rule matched, and for each rule
//! that did not, the first condition that failed, in words that quote the request and the config
//! as the author wrote it.
//!
//! The verdict is [`decide`]'s own (called here, unchanged); the traces re-walk the compiled
//! rules with the same matchers and the same prepared facts ([`Config::prepare`]), field by field,
//! to say *why*. Nothing here runs per request in the filter.

use meshward_common::logtext::{loggable, MAX_LOGGED_CHARS};
use meshward_common::spiffe::{SpiffeId, SCHEME_PREFIX};

use crate::config::{
    Action, ConditionConfig, OperationConfig, PolicyConfig, RuleConfig, SourceConfig,
};
use crate::facts::RequestFacts;
use crate::policy::{
    decide, strings_match, Attr, Condition, Config, Ctx, Decision, DenyReason, Field, Operation,
    Rule, Source, Values,
};

/// The native core's account of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Exactly what [`decide`] returns for these facts.
    pub decision: Decision,
    /// Why no policy was looked at (`requireMtls`, a refused path or header name, a fact a
    /// policy needs that the host could not give); then `policies` is empty.
    pub stopped_before_policies: Option<String>,
    /// Every policy, in config order (empty when stopped before policies).
    pub policies: Vec<PolicyTrace>,
    /// The first matching rule of the deciding policy (`decision.matched_policy`).
    pub deciding_rule: Option<usize>,
}

/// One policy's trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTrace {
    /// Index into the config's `policies`.
    pub index: usize,
    pub name: String,
    pub action: Action,
    /// Some rule matched.
    pub matched: bool,
    pub rules: Vec<RuleTrace>,
}

/// One rule's trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    pub index: usize,
    pub matched: bool,
    /// The first failing part (`from`, then `to`, then `when`); `None` iff `matched`.
    pub failed: Option<Failure>,
}

/// The first condition of a rule that the request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Relative to the rule: `from[0].source.principals`, `to[1].operation.notPaths`,
    /// `when[2] request.headers[x-role]`.
    pub field: String,
    /// What the request had and what was wanted.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Explain how `config` treats the request `facts` describes. Messages quote the configured
/// patterns when `config` came from [`Config::parse_explainable`] (otherwise the pattern lists
/// read as empty).
pub fn explain(config: &Config, facts: &impl RequestFacts) -> Explanation {
    let decision = decide(config, facts);
    let facts: &dyn RequestFacts = facts;
    let prepared = match config.prepare(facts) {
        Ok(p) => p,
        Err((reason, _)) => {
            return Explanation {
                decision,
                stopped_before_policies: Some(stop_message(config, facts, reason)),
                policies: Vec::new(),
                deciding_rule: None,
            }
        }
    };
    let ctx = prepared.ctx();
    let policies: Vec<PolicyTrace> = config
        .policies
        .iter()
        .enumerate()
        .map(|(index, policy)| {
            let raw = config.raw.as_deref().and_then(|r| r.policies.get(index));
            // The same reading rule as `Policy::matches`: DENY/AUDIT hold on either reading of
            // `:path`, ALLOW only on both.
            let any_reading = policy.action != Action::Allow;
            let rules: Vec<RuleTrace> = policy
                .rules
                .iter()
                .enumerate()
                .map(|(i, rule)| {
                    let raw_rule = raw.and_then(|p: &PolicyConfig| p.rules.get(i));
                    let failed = rule_failure(rule, raw_rule, &ctx, any_reading);
                    RuleTrace {
                        index: i,
                        matched: failed.is_none(),
                        failed,
                    }
                })
                .collect();
            PolicyTrace {
                index,
                name: policy.name.clone(),
                action: policy.action,
                matched: rules.iter().any(|r| r.matched),
                rules,
            }
        })
        .collect();
    let deciding_rule = decision
        .matched_policy
        .and_then(|i| policies.get(i))
        .and_then(|p| p.rules.iter().position(|r| r.matched));
    Explanation {
        decision,
        stopped_before_policies: None,
        policies,
        deciding_rule,
    }
}

fn stop_message(config: &Config, facts: &dyn RequestFacts, reason: DenyReason) -> String {
    match reason {
        DenyReason::NoVerifiedPeer => {
            let why = if !facts.mtls() {
                "the connection is not mTLS"
            } else {
                "the peer certificate has no valid SPIFFE URI SAN"
            };
            format!("no verified SPIFFE peer (requireMtls): {why}")
        }
        DenyReason::BadPath(e) => match facts.path() {
            Some(raw) => format!("path refused: {e} ({})", shown(raw)),
            None => format!("path refused: {e}"),
        },
        DenyReason::AmbiguousHeader => match config.ambiguous_header(facts) {
            Some((sent, wanted)) => {
                format!("header {} is another spelling of {wanted}", shown(sent))
            }
            None => "a header name is another spelling of one a policy reads".to_string(),
        },
        DenyReason::Unavailable(what) => {
            format!("`{what}` is unavailable and a policy needs it")
        }
        // Decided by the policies, not before them; `prepare` never returns these.
        DenyReason::DenyPolicy(_) | DenyReason::NoAllowMatched => {
            "decided by the policies".to_string()
        }
    }
}

/// Request-derived text, escaped and bounded (a client chose it).
fn shown(text: &str) -> String {
    loggable(text, MAX_LOGGED_CHARS)
}

/// Patterns as the config wrote them: `[a, b]`.
fn list(patterns: &[String]) -> String {
    format!("[{}]", patterns.join(", "))
}

/// `from[1]` for two entries, `from[1..3]` for four.
fn others(part: &str, count: usize) -> String {
    match count {
        0..=2 => format!("{part}[1]"),
        n => format!("{part}[1..{}]", n.saturating_sub(1)),
    }
}

fn rule_failure(
    rule: &Rule,
    raw: Option<&RuleConfig>,
    ctx: &Ctx<'_>,
    any_reading: bool,
) -> Option<Failure> {
    let empty = RuleConfig::default();
    let raw = raw.unwrap_or(&empty);
    if rule.skipped {
        // On TCP, istiod skips an ALLOW rule that reads what a connection does not have.
        let fields = &rule.http_only;
        return Some(Failure {
            field: "(the whole rule)".to_string(),
            message: format!(
                "skipped on TCP: {} only exist(s) in HTTP requests, and an ALLOW rule that uses \
                 one never matches a connection",
                fields.join(", ")
            ),
        });
    }
    let default_source = SourceConfig::default();
    let default_operation = OperationConfig::default();
    let from = first_of(
        "from",
        rule.from.iter().enumerate().map(|(k, source)| {
            let raw = raw.from.get(k).map_or(&default_source, |f| &f.source);
            source_failure(source, raw, ctx).map(|(field, message)| Failure {
                field: format!("from[{k}].source.{field}"),
                message,
            })
        }),
    );
    if from.is_some() {
        return from;
    }
    let to = first_of(
        "to",
        rule.to.iter().enumerate().map(|(k, operation)| {
            let raw = raw.to.get(k).map_or(&default_operation, |t| &t.operation);
            operation_failure(operation, raw, ctx).map(|(field, message)| Failure {
                field: format!("to[{k}].operation.{field}"),
                message,
            })
        }),
    );
    if to.is_some() {
        return to;
    }
    rule.when.iter().enumerate().find_map(|(k, condition)| {
        if condition.matches(ctx, any_reading) {
            return None;
        }
        let raw = raw.when.get(k);
        let key = raw.map_or("", |c| c.key.as_str());
        Some(Failure {
            field: format!("when[{k}] {key}"),
            message: condition_message(condition, raw, ctx, any_reading),
        })
    })
}

/// A `from`/`to` list holds if any entry does (an empty one is a wildcard); if none does, the
/// failure of the first entry, noting that the others failed too.
fn first_of(part: &str, entries: impl Iterator<Item = Option<Failure>>) -> Option<Failure> {
    let mut first = None;
    let mut count = 0usize;
    for failure in entries {
        let failure = failure?;
        count = count.saturating_add(1);
        first.get_or_insert(failure);
    }
    first.map(|mut f| {
        if count > 1 {
            f.message
                .push_str(&format!(" (and {} failed too)", others(part, count)));
        }
        f
    })
}

/// What the request has for one field, as a phrase.
enum Subject {
    /// `peer cluster.local/ns/web/sa/frontend`; `plural` for a list of values (`values [a, b]`).
    Has { text: String, plural: bool },
    /// `no peer identity (plaintext or not mTLS)`: matches no value.
    Lacks(String),
}

impl Subject {
    fn one(text: String) -> Self {
        Self::Has {
            text,
            plural: false,
        }
    }

    fn not_in(&self, wanted: &str) -> String {
        match self {
            Self::Has {
                text,
                plural: false,
            } => format!("{text} is not in {wanted}"),
            Self::Has { text, plural: true } => format!("{text} are not in {wanted}"),
            Self::Lacks(text) => format!("{text}, so not in {wanted}"),
        }
    }

    fn is_in(&self, refused: &str) -> String {
        match self {
            Self::Has {
                text,
                plural: false,
            } => format!("{text} is in {refused}"),
            Self::Has { text, plural: true } => format!("{text} are in {refused}"),
            Self::Lacks(text) => format!("{text}, yet in {refused}"),
        }
    }
}

const NO_PEER: &str = "no peer identity (plaintext or not mTLS)";
const NO_JWT: &str = "no request principal (no verified JWT)";

/// The peer's SPIFFE ID as Istio's principals are written (without `spiffe://`).
fn principal_text(peer: &SpiffeId) -> &str {
    peer.as_str()
        .strip_prefix(SCHEME_PREFIX)
        .unwrap_or(peer.as_str())
}

/// A field pair's first failure: `is` (one entry must match) before `not` (none may).
fn field_failure<M>(
    field: &Field<M>,
    names: (&str, &str),
    raw: (&[String], &[String]),
    subject: impl Fn() -> Subject,
    hit: impl Fn(&M) -> bool,
) -> Option<(String, String)> {
    if !field.is.is_empty() && !field.is.iter().any(&hit) {
        return Some((names.0.to_string(), subject().not_in(&list(raw.0))));
    }
    let position = field.not.iter().position(&hit)?;
    let mut message = subject().is_in(&list(raw.1));
    if raw.1.len() > 1 {
        if let Some(pattern) = raw.1.get(position) {
            message.push_str(&format!(" (matches {pattern})"));
        }
    }
    Some((names.1.to_string(), message))
}

fn source_failure(s: &Source, raw: &SourceConfig, ctx: &Ctx<'_>) -> Option<(String, String)> {
    let peer = ctx.peer;
    let identity = ctx.facts.identity();
    let source_ip = ctx.facts.source_ip();
    let peer_subject = || match peer {
        Some(p) => Subject::one(format!("peer {}", shown(principal_text(p)))),
        None => Subject::Lacks(NO_PEER.to_string()),
    };
    let namespace_subject = || match peer {
        Some(p) => match p.namespace() {
            Some(ns) => Subject::one(format!("peer namespace {}", shown(ns))),
            None => Subject::Lacks(format!(
                "peer {} has no namespace",
                shown(principal_text(p))
            )),
        },
        None => Subject::Lacks(NO_PEER.to_string()),
    };
    let request_principal_subject = || match identity {
        Some(id) => Subject::one(format!("request principal {}", shown(&id.principal))),
        None => Subject::Lacks(NO_JWT.to_string()),
    };
    let ip_subject = |what: &str, ip: Option<std::net::IpAddr>| match ip {
        Some(ip) => Subject::one(format!("{what} address {ip}")),
        None => Subject::Lacks(format!("no {what} address")),
    };
    field_failure(
        &s.principals,
        ("principals", "notPrincipals"),
        (&raw.principals, &raw.not_principals),
        peer_subject,
        |m| peer.is_some_and(|p| m.matches(p.as_str())),
    )
    .or_else(|| {
        field_failure(
            &s.request_principals,
            ("requestPrincipals", "notRequestPrincipals"),
            (&raw.request_principals, &raw.not_request_principals),
            request_principal_subject,
            |m| identity.is_some_and(|id| m.matches(id)),
        )
    })
    .or_else(|| {
        field_failure(
            &s.namespaces,
            ("namespaces", "notNamespaces"),
            (&raw.namespaces, &raw.not_namespaces),
            namespace_subject,
            |m| {
                peer.and_then(SpiffeId::namespace)
                    .is_some_and(|ns| m.matches(ns))
            },
        )
    })
    .or_else(|| {
        field_failure(
            &s.ip_blocks,
            ("ipBlocks", "notIpBlocks"),
            (&raw.ip_blocks, &raw.not_ip_blocks),
            || ip_subject("source", source_ip),
            |b| source_ip.is_some_and(|ip| crate::matchers::ip_in(std::slice::from_ref(b), ip)),
        )
    })
    .or_else(|| {
        field_failure(
            &s.remote_ip_blocks,
            ("remoteIpBlocks", "notRemoteIpBlocks"),
            (&raw.remote_ip_blocks, &raw.not_remote_ip_blocks),
            || ip_subject("remote", ctx.remote_ip),
            |b| {
                ctx.remote_ip
                    .is_some_and(|ip| crate::matchers::ip_in(std::slice::from_ref(b), ip))
            },
        )
    })
}

fn operation_failure(
    o: &Operation,
    raw: &OperationConfig,
    ctx: &Ctx<'_>,
) -> Option<(String, String)> {
    let f = ctx.facts;
    let host = f.host();
    let port = f.destination_port();
    let method = f.method();
    let host_subject = || match host {
        Some(h) => Subject::one(format!("host {}", shown(h))),
        None => Subject::Lacks("no :authority".to_string()),
    };
    let port_subject = || match port {
        Some(p) => Subject::one(format!("port {p}")),
        None => Subject::Lacks("no destination port".to_string()),
    };
    let method_subject = || match method {
        Some(m) => Subject::one(format!("method {}", shown(m))),
        None => Subject::Lacks("no :method".to_string()),
    };
    let path_subject = || match ctx.path {
        Some(p) => Subject::one(format!("path {} (normalized)", shown(p))),
        None => Subject::Lacks("no :path".to_string()),
    };
    field_failure(
        &o.hosts,
        ("hosts", "notHosts"),
        (&raw.hosts, &raw.not_hosts),
        host_subject,
        |m| host.is_some_and(|h| crate::matchers::host_forms(h).iter().any(|x| m.matches(x))),
    )
    .or_else(|| {
        field_failure(
            &o.ports,
            ("ports", "notPorts"),
            (&raw.ports, &raw.not_ports),
            port_subject,
            |p| port == Some(*p),
        )
    })
    .or_else(|| {
        field_failure(
            &o.methods,
            ("methods", "notMethods"),
            (&raw.methods, &raw.not_methods),
            method_subject,
            |m| method.is_some_and(|v| m.matches(v)),
        )
    })
    .or_else(|| {
        let failed = !o.paths.is_empty() && !ctx.path.is_some_and(|p| o.paths.matches(p));
        failed.then(|| {
            (
                "paths".to_string(),
                path_subject().not_in(&list(&raw.paths)),
            )
        })
    })
    .or_else(|| {
        let failed = !o.not_paths.is_empty() && ctx.path.is_some_and(|p| o.not_paths.matches(p));
        failed.then(|| {
            (
                "notPaths".to_string(),
                path_subject().is_in(&list(&raw.not_paths)),
            )
        })
    })
}

/// Why a `when` condition that does not hold fails. The verdict is `Condition::matches`'s; this
/// only finds words for it.
fn condition_message(
    c: &Condition,
    raw: Option<&ConditionConfig>,
    ctx: &Ctx<'_>,
    any_reading: bool,
) -> String {
    let no_values: &[String] = &[];
    let values = raw.map_or(no_values, |r| r.values.as_slice());
    let not_values = raw.map_or(no_values, |r| r.not_values.as_slice());
    if let Attr::Path = c.attr {
        return path_condition_message(c, (values, not_values), ctx, any_reading);
    }
    let (subject, each) = condition_subject(&c.attr, ctx);
    let values_fail = c.values.as_ref().is_some_and(|v| !c.attr_matches(v, ctx));
    if values_fail {
        return subject.not_in(&list(values));
    }
    let refused = format!("notValues {}", list(not_values));
    // Name the value that hit when the request has several.
    if let (Some(Values::Strings(ms)), Some(each)) = (&c.not_values, each) {
        if let Some(value) = each
            .iter()
            .find(|v| ms.iter().any(|m| m.matches_bytes(v.as_bytes())))
        {
            return format!("value {} is in {refused}", shown(value));
        }
    }
    subject.is_in(&refused)
}

/// The attribute's value(s) as a phrase, and, for a list-valued attribute, each value.
fn condition_subject(attr: &Attr, ctx: &Ctx<'_>) -> (Subject, Option<Vec<String>>) {
    let f = ctx.facts;
    let many = |values: Vec<String>, absent: String| {
        if values.is_empty() {
            (Subject::Lacks(absent), Some(values))
        } else {
            let text = format!(
                "values [{}]",
                values
                    .iter()
                    .map(|v| shown(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            (Subject::Has { text, plural: true }, Some(values))
        }
    };
    let one = |value: Option<String>, what: &str, absent: &str| {
        let subject = match value {
            Some(v) => Subject::one(format!("{what} {}", shown(&v))),
            None => Subject::Lacks(absent.to_string()),
        };
        (subject, None)
    };
    match attr {
        Attr::Header(name) => many(
            f.header_values(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
            format!("header {name} absent"),
        ),
        Attr::Path => one(ctx.path.map(str::to_string), "path", "no :path"),
        Attr::Authority => one(f.host().map(str::to_string), "authority", "no :authority"),
        Attr::SourceIp => one(
            f.source_ip().map(|ip| ip.to_string()),
            "source address",
            "no source address",
        ),
        Attr::RemoteIp => one(
            ctx.remote_ip.map(|ip| ip.to_string()),
            "remote address",
            "no remote address",
        ),
        Attr::SourceNamespace => match ctx.peer {
            Some(p) => one(
                p.namespace().map(str::to_string),
                "peer namespace",
                &format!("peer {} has no namespace", shown(principal_text(p))),
            ),
            None => one(None, "", NO_PEER),
        },
        Attr::SourcePrincipal => one(
            ctx.peer.map(|p| principal_text(p).to_string()),
            "peer",
            NO_PEER,
        ),
        Attr::AuthPrincipal => one(
            f.identity().map(|id| id.principal.clone()),
            "request principal",
            NO_JWT,
        ),
        Attr::AuthAudiences => match f.identity() {
            Some(id) => many(id.aud.clone(), "no audiences in the token".to_string()),
            None => (Subject::Lacks(NO_JWT.to_string()), None),
        },
        Attr::AuthPresenter => match f.identity() {
            Some(id) => one(id.azp.clone(), "presenter", "no azp in the token"),
            None => one(None, "", NO_JWT),
        },
        Attr::AuthClaims(path) => match f.identity() {
            Some(id) => {
                let names: Vec<&str> = path.iter().map(String::as_str).collect();
                let shown_path: String = path.iter().map(|p| format!("[{p}]")).collect();
                many(
                    id.claim_values(&names),
                    format!("claim {shown_path} absent"),
                )
            }
            None => (Subject::Lacks(NO_JWT.to_string()), None),
        },
        Attr::DestinationPort => one(
            f.destination_port().map(|p| p.to_string()),
            "port",
            "no destination port",
        ),
        Attr::DestinationIp => one(
            f.destination_ip().map(|ip| ip.to_string()),
            "destination address",
            "no destination address",
        ),
        Attr::Sni => one(f.sni().map(str::to_string), "SNI", "no SNI"),
    }
}

/// `request.headers[:path]` has two readings, the normalized path without and with its query:
/// an ALLOW condition fails if either reading fails, a DENY/AUDIT one only if both do.
fn path_condition_message(
    c: &Condition,
    (values, not_values): (&[String], &[String]),
    ctx: &Ctx<'_>,
    any_reading: bool,
) -> String {
    let (Some(path), Some(target)) = (ctx.path, ctx.target()) else {
        return "no :path".to_string();
    };
    let target = target.as_str();
    let reason = |label: &str, reading: &str| -> Option<String> {
        let subject = Subject::one(format!("{label} {} (normalized)", shown(reading)));
        if c.values
            .as_ref()
            .is_some_and(|v| !strings_match(v, reading))
        {
            return Some(subject.not_in(&list(values)));
        }
        if c.not_values
            .as_ref()
            .is_some_and(|v| strings_match(v, reading))
        {
            return Some(subject.is_in(&format!("notValues {}", list(not_values))));
        }
        None
    };
    let without = reason("path", path);
    if path == target {
        return without.unwrap_or_default();
    }
    let with = reason("path with query", target);
    match (without, with) {
        (Some(a), Some(b)) => format!("{a}; and {b}"),
        (Some(only), None) | (None, Some(only)) if !any_reading => {
            format!("{only} (an ALLOW condition must hold with and without the query)")
        }
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests;
