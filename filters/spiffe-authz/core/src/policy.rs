//! Compiling the config into matchers (once, in `on_configure`) and evaluating them per request.

use std::net::IpAddr;

use ipnet::IpNet;
use meshward_common::header_name;
use meshward_common::matchers::{MatchOptions, StringMatcher};
use meshward_common::path::{self, NormalizedPath, PathError, PathParameters};
use meshward_common::spiffe::SpiffeId;
use meshward_common::ConfigError;

use crate::config::{
    Action, ConditionConfig, OperationConfig, PolicyConfig, RawConfig, RuleConfig, SourceConfig,
};
use crate::facts::{Needs, RequestFacts};
use crate::matchers::{self as m, PathSet, RequestPrincipal};

/// The `when` keys we support. Anything else is a config error (Istio skips such a rule, which
/// silently narrows an ALLOW and widens nothing for a DENY: neither is what the author meant).
pub const SUPPORTED_WHEN_KEYS: &str = "request.headers[<name>], source.ip, remote.ip, \
    source.namespace, source.principal, request.auth.principal, request.auth.audiences, \
    request.auth.presenter, request.auth.claims[<name>]…, destination.ip, destination.port, \
    connection.sni";

/// A field with its `not` twin: matches iff (`is` is empty or one entry matches) and no `not`
/// entry matches. An attribute the request does not have matches no entry, so it fails `is` and
/// passes `not`, as in Istio.
#[derive(Debug, Clone)]
pub(crate) struct Field<M> {
    pub(crate) is: Vec<M>,
    pub(crate) not: Vec<M>,
}

impl<M> Default for Field<M> {
    fn default() -> Self {
        Self {
            is: Vec::new(),
            not: Vec::new(),
        }
    }
}

impl<M> Field<M> {
    fn is_set(&self) -> bool {
        !self.is.is_empty() || !self.not.is_empty()
    }

    fn check(&self, hit: impl Fn(&M) -> bool) -> bool {
        (self.is.is_empty() || self.is.iter().any(&hit)) && !self.not.iter().any(&hit)
    }
}

fn field<M>(
    parent: &str,
    name: &str,
    not_name: &str,
    is: &[String],
    not: &[String],
    parse: impl Fn(&str, &str) -> Result<M, ConfigError>,
) -> Result<Field<M>, ConfigError> {
    let list = |n: &str, values: &[String]| -> Result<Vec<M>, ConfigError> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| parse(&format!("{parent}.{n}[{i}]"), v))
            .collect()
    };
    Ok(Field {
        is: list(name, is)?,
        not: list(not_name, not)?,
    })
}

fn string_matcher(
    opts: MatchOptions<'static>,
) -> impl Fn(&str, &str) -> Result<StringMatcher, ConfigError> {
    move |f, v| StringMatcher::parse(f, v, &opts)
}

#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) principals: Field<StringMatcher>,
    pub(crate) request_principals: Field<RequestPrincipal>,
    pub(crate) namespaces: Field<StringMatcher>,
    pub(crate) ip_blocks: Field<IpNet>,
    pub(crate) remote_ip_blocks: Field<IpNet>,
}

#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub(crate) hosts: Field<StringMatcher>,
    pub(crate) ports: Field<u16>,
    pub(crate) methods: Field<StringMatcher>,
    pub(crate) paths: PathSet,
    pub(crate) not_paths: PathSet,
}

#[derive(Debug, Clone)]
pub(crate) enum Attr {
    /// A request header other than `:path`, `:authority` and `host`.
    Header(String),
    /// `request.headers[:path]`: matched on the normalized path, read both without and with its
    /// `?query` (see [`Condition::matches`]).
    Path,
    /// `request.headers[:authority]` / `[host]` (HTTP/1's `Host` is `:authority`): matched as
    /// `hosts` is, on every spelling of [`m::host_forms`], case-insensitive.
    Authority,
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    AuthClaims(Vec<String>),
    DestinationPort,
    /// `destination.ip`: the local address the connection arrived on.
    DestinationIp,
    Sni,
}

#[derive(Debug, Clone)]
pub(crate) enum Values {
    Strings(Vec<StringMatcher>),
    Ips(Vec<IpNet>),
    Ports(Vec<u16>),
    RequestPrincipals(Vec<RequestPrincipal>),
}

#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub(crate) attr: Attr,
    pub(crate) values: Option<Values>,
    pub(crate) not_values: Option<Values>,
    /// Dropped for the protocol (an HTTP-only key in a TCP DENY/AUDIT rule): always holds.
    pub(crate) ignored: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) from: Vec<Source>,
    pub(crate) to: Vec<Operation>,
    pub(crate) when: Vec<Condition>,
    /// On TCP: the HTTP-only fields the rule sets, as the config spells them
    /// (`to[0].operation.methods`, `when[1] request.headers[x]`). In an ALLOW rule they make the
    /// rule `skipped`; in a DENY or AUDIT rule they were dropped (cleared, or `ignored`).
    pub(crate) http_only: Vec<String>,
    /// Never matches: an ALLOW rule that uses an HTTP-only field, on TCP (istiod skips it).
    pub(crate) skipped: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) name: String,
    pub(crate) action: Action,
    pub(crate) rules: Vec<Rule>,
}

/// The validated, compiled configuration (the filter's `Config`). Built once; [`decide`] per request
/// allocates only for path normalization and the decision itself.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) policies: Vec<Policy>,
    has_allow: bool,
    require_mtls: bool,
    dry_run: bool,
    num_trusted_proxies: u32,
    path_parameters: PathParameters,
    protocol: Protocol,
    needs: Needs,
    /// The config as written, for [`crate::explain`] to quote patterns and keys as the author
    /// wrote them. Kept only by [`Config::parse_explainable`] (native tools), so the filter in
    /// the proxy holds no second copy of its policies.
    pub(crate) raw: Option<Box<RawConfig>>,
}

/// What the filter sees: HTTP requests (the HTTP filter) or connections (the network filter,
/// `spiffe-authz-tcp`), which only have the connection's attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Http,
    Tcp,
}

/// Why a request is (or, in dry-run mode, would be) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// `requireMtls` and no mTLS connection with a valid SPIFFE URI SAN.
    NoVerifiedPeer,
    /// The path cannot be normalized safely (400).
    BadPath(PathError),
    /// A request header whose name equals a header a policy reads only after folding case and
    /// `_`/`-` (`x_role` for `x-role`): a backend that folds `_` into `-` would read it as the
    /// header the policy checked (400).
    AmbiguousHeader,
    /// A fact a policy needs could not be read from the host; named.
    Unavailable(&'static str),
    /// This DENY policy (index) matched.
    DenyPolicy(usize),
    /// ALLOW policies exist and none matched.
    NoAllowMatched,
}

impl DenyReason {
    /// The status the client gets: 400 for a refused path or header name, 403 for everything
    /// else.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadPath(_) | Self::AmbiguousHeader => 400,
            _ => 403,
        }
    }
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request goes on (always true in dry-run mode).
    pub allowed: bool,
    /// What the policies decided (in dry-run mode: what would have been enforced).
    pub deny: Option<DenyReason>,
    /// The deciding policy: the first matching DENY, or the first matching ALLOW that let the
    /// request through. Index into the config's `policies`.
    pub matched_policy: Option<usize>,
    /// Every AUDIT policy that matched.
    pub audit_matched: Vec<usize>,
    /// Dry-run mode and the request would have been refused.
    pub dry_run_would_deny: bool,
    /// Replace `:path` with this (normalized path + original query) before forwarding.
    pub rewrite_path: Option<String>,
}

impl Decision {
    /// The status to answer with when `!allowed`.
    pub fn status(&self) -> u16 {
        self.deny.map_or(403, |d| d.status())
    }
}

impl Config {
    /// The JSON Schema of the pluginConfig (policies/spiffe-authz/schema.json).
    #[cfg(feature = "schema")]
    pub fn json_schema() -> schemars::Schema {
        RawConfig::json_schema()
    }

    /// Parse and compile a pluginConfig document for the HTTP filter.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::parse_for(bytes, Protocol::Http)
    }

    /// Parse and compile a pluginConfig document for `protocol`.
    pub fn parse_for(bytes: &[u8], protocol: Protocol) -> Result<Self, ConfigError> {
        Self::compile_for(&meshward_common::parse_json::<RawConfig>(bytes)?, protocol)
    }

    /// [`Config::parse`], keeping the config as written so that [`crate::explain`] can quote its
    /// patterns (for native tools such as `meshward explain`; the filter uses `parse`).
    pub fn parse_explainable(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::parse_explainable_for(bytes, Protocol::Http)
    }

    /// [`Config::parse_explainable`] for `protocol`.
    pub fn parse_explainable_for(bytes: &[u8], protocol: Protocol) -> Result<Self, ConfigError> {
        let raw = meshward_common::parse_json::<RawConfig>(bytes)?;
        let mut config = Self::compile_for(&raw, protocol)?;
        config.raw = Some(Box::new(raw));
        Ok(config)
    }

    /// Compile for the HTTP filter.
    pub fn compile(config: &RawConfig) -> Result<Self, ConfigError> {
        Self::compile_for(config, Protocol::Http)
    }

    /// Validate and compile. The whole config is validated for either protocol (a TCP filter
    /// refuses a malformed path pattern too); for TCP the rules are then cut down as istiod's TCP
    /// builder cuts them ([`Rule::for_tcp`]).
    pub fn compile_for(config: &RawConfig, protocol: Protocol) -> Result<Self, ConfigError> {
        let path_parameters = config.path_parameters.mode();
        let mut policies = Vec::with_capacity(config.policies.len());
        for (i, p) in config.policies.iter().enumerate() {
            let at = format!("policies[{i}]");
            if config.policies.iter().take(i).any(|q| q.name == p.name) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("duplicate policy name `{}`", p.name),
                ));
            }
            let mut policy = compile_policy(&at, p, path_parameters)?;
            if protocol == Protocol::Tcp {
                let action = policy.action;
                for rule in &mut policy.rules {
                    rule.for_tcp(action);
                }
            }
            policies.push(policy);
        }
        // A connection has no headers: the remote address is the connection's peer, as Envoy's
        // network RBAC reads `remote_ip` (numTrustedProxies is about `x-forwarded-for`).
        let num_trusted_proxies = match protocol {
            Protocol::Http => config.num_trusted_proxies,
            Protocol::Tcp => 0,
        };
        let mut needs = Needs {
            peer: config.require_mtls,
            ..Needs::default()
        };
        for rule in policies.iter().flat_map(|p| &p.rules) {
            rule.add_needs(&mut needs);
        }
        if needs.remote_ip {
            if num_trusted_proxies == 0 {
                needs.source_ip = true;
            } else {
                needs.header("x-forwarded-for");
            }
        }
        let has_allow = policies.iter().any(|p| p.action == Action::Allow);
        Ok(Self {
            policies,
            has_allow,
            require_mtls: config.require_mtls,
            dry_run: config.dry_run,
            num_trusted_proxies,
            path_parameters,
            protocol,
            needs,
            raw: None,
        })
    }

    /// The protocol the config was compiled for.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// For TCP: one line per rule that reads HTTP-only fields, saying what istiod's TCP builder
    /// (and so this filter) does with it; empty for HTTP. The network filter logs them at
    /// configure time.
    pub fn tcp_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for p in &self.policies {
            for (i, rule) in p.rules.iter().enumerate() {
                if rule.http_only.is_empty() {
                    continue;
                }
                let fields = rule.http_only.join(", ");
                let what = if rule.skipped {
                    "never matches a connection (an ALLOW rule that reads HTTP-only fields is \
                     skipped)"
                        .to_string()
                } else {
                    "ignores them on TCP, which widens the rule (as istiod does for DENY and \
                     AUDIT)"
                        .to_string()
                };
                notes.push(format!(
                    "policy `{}` rules[{i}] ({}) reads HTTP-only {fields}: it {what}",
                    p.name,
                    p.action.as_str()
                ));
            }
        }
        notes
    }

    /// What the adapter must read per request.
    pub fn needs(&self) -> &Needs {
        &self.needs
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// Name of policy `index` (empty if out of range).
    pub fn policy_name(&self, index: usize) -> &str {
        self.policies.get(index).map_or("", |p| p.name.as_str())
    }

    /// Action of policy `index`.
    pub fn policy_action(&self, index: usize) -> Option<Action> {
        self.policies.get(index).map(|p| p.action)
    }

    /// A one-line account of a refusal, naming the policy, for the deny log line.
    pub fn describe(&self, decision: &Decision) -> String {
        match decision.deny {
            None => match decision.matched_policy {
                Some(i) => format!("allowed by policy `{}`", self.policy_name(i)),
                None => "allowed: no ALLOW policies".to_string(),
            },
            Some(DenyReason::NoVerifiedPeer) => {
                "denied: no verified SPIFFE peer (requireMtls)".to_string()
            }
            Some(DenyReason::BadPath(e)) => format!("rejected: {e}"),
            Some(DenyReason::AmbiguousHeader) => {
                "rejected: a header name equals one a policy reads only after folding `_`/`-`"
                    .to_string()
            }
            Some(DenyReason::Unavailable(what)) => {
                format!("denied: `{what}` is unavailable and a policy needs it")
            }
            Some(DenyReason::DenyPolicy(i)) => {
                format!("denied by DENY policy `{}`", self.policy_name(i))
            }
            Some(DenyReason::NoAllowMatched) => "denied: no ALLOW policy matched".to_string(),
        }
    }

    /// What every request goes through before any policy: the peer check, path normalization,
    /// the header-spelling check and the facts the policies need. `Err` is the refusal (with the
    /// normalized path when it got that far). Shared by [`decide`] and [`crate::explain`], so
    /// both stop at the same place.
    pub(crate) fn prepare<'f>(
        &self,
        facts: &'f dyn RequestFacts,
    ) -> Result<Prepared<'f>, (DenyReason, Option<NormalizedPath>)> {
        let peer = facts.peer().filter(|_| facts.mtls());
        if self.require_mtls && peer.is_none() {
            return Err((DenyReason::NoVerifiedPeer, None));
        }
        let normalized = if self.needs.path {
            match facts
                .path()
                .map(|raw| path::normalize_with(raw, self.path_parameters))
                .unwrap_or(Err(PathError::Missing))
            {
                Ok(n) => Some(n),
                Err(e) => return Err((DenyReason::BadPath(e), None)),
            }
        } else {
            None
        };
        if self.ambiguous_header(facts).is_some() {
            return Err((DenyReason::AmbiguousHeader, None));
        }
        let remote_ip = if self.needs.remote_ip {
            self.remote_ip(facts)
        } else {
            None
        };
        if let Some(missing) = self.missing_fact(facts, remote_ip) {
            return Err((DenyReason::Unavailable(missing), normalized));
        }
        Ok(Prepared {
            facts,
            peer,
            normalized,
            remote_ip,
        })
    }

    #[allow(clippy::type_complexity)]
    fn judge(
        &self,
        facts: &dyn RequestFacts,
    ) -> (
        Option<DenyReason>,
        Option<usize>,
        Vec<usize>,
        Option<NormalizedPath>,
    ) {
        let prepared = match self.prepare(facts) {
            Ok(p) => p,
            Err((deny, normalized)) => return (Some(deny), None, Vec::new(), normalized),
        };
        let ctx = prepared.ctx();

        let audit_matched: Vec<usize> = self
            .policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.action == Action::Audit && p.matches(&ctx))
            .map(|(i, _)| i)
            .collect();
        let first = |action: Action| {
            self.policies
                .iter()
                .position(|p| p.action == action && p.matches(&ctx))
        };
        if let Some(i) = first(Action::Deny) {
            return (
                Some(DenyReason::DenyPolicy(i)),
                Some(i),
                audit_matched,
                prepared.normalized,
            );
        }
        if !self.has_allow {
            return (None, None, audit_matched, prepared.normalized);
        }
        match first(Action::Allow) {
            Some(i) => (None, Some(i), audit_matched, prepared.normalized),
            None => (
                Some(DenyReason::NoAllowMatched),
                None,
                audit_matched,
                prepared.normalized,
            ),
        }
    }

    /// The original client address: the direct peer, or with `numTrustedProxies = n > 0` the
    /// `n`-th `x-forwarded-for` entry from the right (each trusted proxy appended the address it
    /// saw; the leftmost entries are whatever the client claimed). Too few entries or an entry
    /// that is not an address ⇒ unknown.
    fn remote_ip(&self, facts: &dyn RequestFacts) -> Option<IpAddr> {
        if self.num_trusted_proxies == 0 {
            return facts.source_ip();
        }
        let entries: Vec<&[u8]> = facts
            .header_values("x-forwarded-for")
            .flat_map(|v| v.split(|b| *b == b','))
            .collect();
        let from_right = usize::try_from(self.num_trusted_proxies).ok()?;
        let index = entries.len().checked_sub(from_right)?;
        let entry = std::str::from_utf8(entries.get(index)?).ok()?.trim();
        entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
    }

    /// Whether a request header is a policy-read header in another spelling: equal after ASCII
    /// case-folding and `_` ⇒ `-`, but not the same name. The adapter hands over every header
    /// whose folded name is wanted ([`header_name::same`]).
    /// Returns the request's spelling and the policy's, for [`crate::explain`] to name them.
    pub(crate) fn ambiguous_header<'a>(
        &'a self,
        facts: &'a dyn RequestFacts,
    ) -> Option<(&'a str, &'a str)> {
        facts.headers().iter().find_map(|(name, _)| {
            self.needs
                .headers
                .iter()
                .find(|w| {
                    header_name::same(w.as_bytes(), name.as_bytes())
                        && !w.eq_ignore_ascii_case(name)
                })
                .map(|w| (name.as_str(), w.as_str()))
        })
    }

    fn missing_fact(
        &self,
        facts: &dyn RequestFacts,
        remote_ip: Option<IpAddr>,
    ) -> Option<&'static str> {
        let n = &self.needs;
        if n.method && facts.method().is_none() {
            Some(":method")
        } else if n.host && facts.host().is_none() {
            Some(":authority")
        } else if n.destination_port && facts.destination_port().is_none() {
            Some("destination.port")
        } else if n.source_ip && facts.source_ip().is_none() {
            Some("source.address")
        } else if n.destination_ip && facts.destination_ip().is_none() {
            Some("destination.address")
        } else if n.remote_ip && remote_ip.is_none() {
            Some("remote address (x-forwarded-for with numTrustedProxies)")
        } else if n.identity && facts.identity_unreadable() {
            // Present but unreadable is not "no identity": a DENY on request principals or
            // claims would fail open.
            Some("meshward_request_auth (published but unreadable)")
        } else {
            None
        }
    }
}

/// Decide one request (see docs/spiffe-authz.md for the order).
pub fn decide(config: &Config, facts: &impl RequestFacts) -> Decision {
    let (deny, matched_policy, audit_matched, normalized) = config.judge(facts);
    let would_deny = deny.is_some();
    let rewrite_path = match (&normalized, would_deny || config.dry_run) {
        (Some(n), false) if n.changed() => Some(n.forward_target()),
        _ => None,
    };
    Decision {
        allowed: !would_deny || config.dry_run,
        deny,
        matched_policy,
        audit_matched,
        dry_run_would_deny: config.dry_run && would_deny,
        rewrite_path,
    }
}

/// A request that passed [`Config::prepare`]: the facts and what was derived from them once.
pub(crate) struct Prepared<'f> {
    pub(crate) facts: &'f dyn RequestFacts,
    pub(crate) peer: Option<&'f SpiffeId>,
    pub(crate) normalized: Option<NormalizedPath>,
    pub(crate) remote_ip: Option<IpAddr>,
}

impl Prepared<'_> {
    pub(crate) fn ctx(&self) -> Ctx<'_> {
        Ctx {
            facts: self.facts,
            peer: self.peer,
            peer_namespace: self.peer.and_then(SpiffeId::namespace),
            normalized: self.normalized.as_ref(),
            path: self.normalized.as_ref().map(NormalizedPath::path),
            remote_ip: self.remote_ip,
        }
    }
}

/// The facts of one request, with the derived ones computed once.
pub(crate) struct Ctx<'f> {
    pub(crate) facts: &'f dyn RequestFacts,
    pub(crate) peer: Option<&'f SpiffeId>,
    /// The peer's Istio namespace (`/ns/<ns>/…`), read once for every namespace matcher.
    pub(crate) peer_namespace: Option<&'f str>,
    normalized: Option<&'f NormalizedPath>,
    /// The normalized path (no query).
    pub(crate) path: Option<&'f str>,
    pub(crate) remote_ip: Option<IpAddr>,
}

impl Ctx<'_> {
    /// The normalized path with the original `?query`: the `:path` the upstream receives. Made
    /// when a `request.headers[:path]` condition asks (most policies have none).
    pub(crate) fn target(&self) -> Option<String> {
        self.normalized.map(NormalizedPath::forward_target)
    }
}

impl Policy {
    /// A policy matches if one of its rules does; no rules ⇒ never.
    fn matches(&self, ctx: &Ctx<'_>) -> bool {
        // Where one attribute has several readings (`:path` with and without its query), a DENY
        // or AUDIT condition holds if it holds for any reading, an ALLOW condition only if it
        // holds for all: an ambiguous request is denied by either reading, allowed by neither
        // alone.
        let any_reading = self.action != Action::Allow;
        self.rules.iter().any(|r| r.matches(ctx, any_reading))
    }
}

impl Rule {
    /// One `from` and one `to` and every `when`; a missing part is a wildcard.
    pub(crate) fn matches(&self, ctx: &Ctx<'_>, any_reading: bool) -> bool {
        !self.skipped
            && (self.from.is_empty() || self.from.iter().any(|s| s.matches(ctx)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(ctx)))
            && self.when.iter().all(|c| c.matches(ctx, any_reading))
    }
}

impl Rule {
    /// Add what this rule reads to `needs` (nothing if it never matches).
    fn add_needs(&self, needs: &mut Needs) {
        if self.skipped {
            return;
        }
        for s in &self.from {
            needs.peer |= s.principals.is_set() || s.namespaces.is_set();
            needs.identity |= s.request_principals.is_set();
            needs.source_ip |= s.ip_blocks.is_set();
            needs.remote_ip |= s.remote_ip_blocks.is_set();
        }
        for o in &self.to {
            needs.host |= o.hosts.is_set();
            needs.destination_port |= o.ports.is_set();
            needs.method |= o.methods.is_set();
            needs.path |= !o.paths.is_empty() || !o.not_paths.is_empty();
        }
        for c in self.when.iter().filter(|c| !c.ignored) {
            match &c.attr {
                Attr::Header(name) => needs.header(name),
                Attr::Path => needs.path = true,
                Attr::Authority => needs.host = true,
                Attr::SourceIp => needs.source_ip = true,
                Attr::RemoteIp => needs.remote_ip = true,
                Attr::SourceNamespace | Attr::SourcePrincipal => needs.peer = true,
                Attr::AuthPrincipal
                | Attr::AuthAudiences
                | Attr::AuthPresenter
                | Attr::AuthClaims(_) => needs.identity = true,
                Attr::DestinationPort => needs.destination_port = true,
                Attr::DestinationIp => needs.destination_ip = true,
                Attr::Sni => needs.sni = true,
            }
        }
    }

    /// istiod's TCP builder (`model.go` `checkError`): a field a connection does not have (hosts,
    /// methods, paths, request principals, request headers, JWT claims) makes an ALLOW rule
    /// never match — the policy can only get narrower — and is dropped from a DENY or AUDIT rule,
    /// which gets wider (a DENY on `methods: [GET]` denies every connection it otherwise
    /// matches). Either way the rule never turns into "allow" because of a field it cannot read.
    fn for_tcp(&mut self, action: Action) {
        let mut found = Vec::new();
        for (k, s) in self.from.iter_mut().enumerate() {
            if s.request_principals.is_set() {
                found.push(format!("from[{k}].source.requestPrincipals"));
                s.request_principals = Field::default();
            }
        }
        for (k, o) in self.to.iter_mut().enumerate() {
            let at = |name: &str| format!("to[{k}].operation.{name}");
            if o.hosts.is_set() {
                found.push(at("hosts"));
                o.hosts = Field::default();
            }
            if o.methods.is_set() {
                found.push(at("methods"));
                o.methods = Field::default();
            }
            if !o.paths.is_empty() || !o.not_paths.is_empty() {
                found.push(at("paths"));
                o.paths = PathSet::default();
                o.not_paths = PathSet::default();
            }
        }
        for (k, c) in self.when.iter_mut().enumerate() {
            if let Some(key) = c.attr.http_only_key() {
                found.push(format!("when[{k}] {key}"));
                c.ignored = true;
            }
        }
        self.skipped = action == Action::Allow && !found.is_empty();
        self.http_only = found;
    }
}

impl Attr {
    /// The `when` key of an attribute only an HTTP request has (lower-cased header names);
    /// `None` for a connection attribute.
    fn http_only_key(&self) -> Option<String> {
        Some(match self {
            Attr::Header(name) => format!("request.headers[{name}]"),
            Attr::Path => "request.headers[:path]".to_string(),
            Attr::Authority => "request.headers[:authority]".to_string(),
            Attr::AuthPrincipal => "request.auth.principal".to_string(),
            Attr::AuthAudiences => "request.auth.audiences".to_string(),
            Attr::AuthPresenter => "request.auth.presenter".to_string(),
            Attr::AuthClaims(path) => {
                let path: String = path.iter().map(|p| format!("[{p}]")).collect();
                format!("request.auth.claims{path}")
            }
            _ => return None,
        })
    }
}

impl Source {
    fn matches(&self, ctx: &Ctx<'_>) -> bool {
        let peer = ctx.peer;
        let identity = ctx.facts.identity();
        self.principals
            .check(|m| peer.is_some_and(|p| m.matches(p.as_str())))
            && self
                .namespaces
                .check(|m| ctx.peer_namespace.is_some_and(|ns| m.matches(ns)))
            && self
                .request_principals
                .check(|m| identity.is_some_and(|id| m.matches(id)))
            && self.ip_blocks.check(|b| {
                ctx.facts
                    .source_ip()
                    .is_some_and(|ip| m::ip_in(std::slice::from_ref(b), ip))
            })
            && self.remote_ip_blocks.check(|b| {
                ctx.remote_ip
                    .is_some_and(|ip| m::ip_in(std::slice::from_ref(b), ip))
            })
    }
}

impl Operation {
    fn matches(&self, ctx: &Ctx<'_>) -> bool {
        let f = ctx.facts;
        self.hosts.check(|m| {
            f.host()
                .is_some_and(|h| m::host_forms(h).iter().any(|form| m.matches(form)))
        }) && self.ports.check(|p| f.destination_port() == Some(*p))
            && self
                .methods
                .check(|m| f.method().is_some_and(|v| m.matches(v)))
            && (self.paths.is_empty() || ctx.path.is_some_and(|p| self.paths.matches(p)))
            && (self.not_paths.is_empty() || !ctx.path.is_some_and(|p| self.not_paths.matches(p)))
    }
}

impl Condition {
    pub(crate) fn matches(&self, ctx: &Ctx<'_>, any_reading: bool) -> bool {
        if self.ignored {
            return true;
        }
        if let Attr::Path = self.attr {
            // The path is normalized whenever a `:path` condition exists (`Needs::path`); without
            // one (never, in practice) nothing can hold.
            let (Some(path), Some(target)) = (ctx.path, ctx.target()) else {
                return false;
            };
            let readings = [path, target.as_str()];
            let holds = |r: &str| {
                self.values.as_ref().is_none_or(|v| strings_match(v, r))
                    && !self
                        .not_values
                        .as_ref()
                        .is_some_and(|v| strings_match(v, r))
            };
            return if any_reading {
                readings.iter().any(|r| holds(r))
            } else {
                readings.iter().all(|r| holds(r))
            };
        }
        self.values
            .as_ref()
            .is_none_or(|v| self.attr_matches(v, ctx))
            && !self
                .not_values
                .as_ref()
                .is_some_and(|v| self.attr_matches(v, ctx))
    }

    /// Whether some value of the attribute matches some of `values`.
    pub(crate) fn attr_matches(&self, values: &Values, ctx: &Ctx<'_>) -> bool {
        let f = ctx.facts;
        let strings = |candidates: &mut dyn Iterator<Item = &[u8]>| match values {
            Values::Strings(ms) => {
                for c in candidates {
                    if ms.iter().any(|m| m.matches_bytes(c)) {
                        return true;
                    }
                }
                false
            }
            _ => false,
        };
        let ip = |addr: Option<IpAddr>| match values {
            Values::Ips(blocks) => addr.is_some_and(|a| m::ip_in(blocks, a)),
            _ => false,
        };
        match &self.attr {
            Attr::Header(name) => strings(&mut f.header_values(name)),
            // Handled in `matches` (it has two readings); here only for completeness.
            Attr::Path => strings(&mut ctx.path.map(str::as_bytes).into_iter()),
            Attr::Authority => strings(
                &mut f
                    .host()
                    .map(|h| m::host_forms(h).map(str::as_bytes))
                    .into_iter()
                    .flatten(),
            ),
            Attr::SourceIp => ip(f.source_ip()),
            Attr::RemoteIp => ip(ctx.remote_ip),
            Attr::SourceNamespace => {
                strings(&mut ctx.peer_namespace.map(str::as_bytes).into_iter())
            }
            Attr::SourcePrincipal => {
                strings(&mut ctx.peer.map(|p| p.as_str().as_bytes()).into_iter())
            }
            Attr::AuthPrincipal => match values {
                Values::RequestPrincipals(rps) => f
                    .identity()
                    .is_some_and(|id| rps.iter().any(|rp| rp.matches(id))),
                _ => false,
            },
            Attr::AuthAudiences => match f.identity() {
                Some(id) => strings(&mut id.aud.iter().map(|a| a.as_bytes())),
                None => false,
            },
            Attr::AuthPresenter => strings(
                &mut f
                    .identity()
                    .and_then(|id| id.azp.as_deref())
                    .map(str::as_bytes)
                    .into_iter(),
            ),
            Attr::AuthClaims(path) => match f.identity() {
                Some(id) => {
                    let path: Vec<&str> = path.iter().map(String::as_str).collect();
                    strings(&mut id.claim_values(&path).iter().map(|v| v.as_bytes()))
                }
                None => false,
            },
            Attr::DestinationPort => match values {
                Values::Ports(ports) => f.destination_port().is_some_and(|p| ports.contains(&p)),
                _ => false,
            },
            Attr::DestinationIp => ip(f.destination_ip()),
            // Server names are case-insensitive (RFC 6066 carries a DNS hostname): a client may
            // send `DB.Example.com` to reach what a policy calls `db.example.com`, so both sides
            // are compared lower-cased (the patterns were lower-cased when compiled).
            Attr::Sni => {
                let sni = f.sni().map(str::to_ascii_lowercase);
                strings(&mut sni.as_deref().map(str::as_bytes).into_iter())
            }
        }
    }
}

pub(crate) fn strings_match(values: &Values, reading: &str) -> bool {
    match values {
        Values::Strings(ms) => ms.iter().any(|m| m.matches(reading)),
        _ => false,
    }
}

fn compile_policy(
    at: &str,
    p: &PolicyConfig,
    params: PathParameters,
) -> Result<Policy, ConfigError> {
    let name_ok = !p.name.is_empty()
        && p.name.len() <= 253
        && p.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        return Err(ConfigError::new(
            format!("{at}.name"),
            "must be 1-253 characters of letters, digits, `-`, `_` and `.` (it names a metric)",
        ));
    }
    let rules = p
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| compile_rule(&format!("{at}.rules[{i}]"), r, params))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Policy {
        name: p.name.clone(),
        action: p.action,
        rules,
    })
}

fn compile_rule(at: &str, r: &RuleConfig, params: PathParameters) -> Result<Rule, ConfigError> {
    let from = r
        .from
        .iter()
        .enumerate()
        .map(|(i, f)| compile_source(&format!("{at}.from[{i}].source"), &f.source))
        .collect::<Result<Vec<_>, _>>()?;
    let to = r
        .to
        .iter()
        .enumerate()
        .map(|(i, t)| compile_operation(&format!("{at}.to[{i}].operation"), &t.operation, params))
        .collect::<Result<Vec<_>, _>>()?;
    let when = r
        .when
        .iter()
        .enumerate()
        .map(|(i, c)| compile_condition(&format!("{at}.when[{i}]"), c, params))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        from,
        to,
        when,
        http_only: Vec::new(),
        skipped: false,
    })
}

fn compile_source(at: &str, s: &SourceConfig) -> Result<Source, ConfigError> {
    let source = Source {
        principals: field(
            at,
            "principals",
            "notPrincipals",
            &s.principals,
            &s.not_principals,
            m::principal,
        )?,
        request_principals: field(
            at,
            "requestPrincipals",
            "notRequestPrincipals",
            &s.request_principals,
            &s.not_request_principals,
            RequestPrincipal::parse,
        )?,
        namespaces: field(
            at,
            "namespaces",
            "notNamespaces",
            &s.namespaces,
            &s.not_namespaces,
            string_matcher(MatchOptions::new()),
        )?,
        ip_blocks: field(
            at,
            "ipBlocks",
            "notIpBlocks",
            &s.ip_blocks,
            &s.not_ip_blocks,
            m::ip_block,
        )?,
        remote_ip_blocks: field(
            at,
            "remoteIpBlocks",
            "notRemoteIpBlocks",
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
            m::ip_block,
        )?,
    };
    let set = [
        source.principals.is_set(),
        source.namespaces.is_set(),
        source.request_principals.is_set(),
        source.ip_blocks.is_set(),
        source.remote_ip_blocks.is_set(),
    ];
    if !set.contains(&true) {
        return Err(ConfigError::new(at, "a source must set at least one field"));
    }
    Ok(source)
}

fn compile_operation(
    at: &str,
    o: &OperationConfig,
    params: PathParameters,
) -> Result<Operation, ConfigError> {
    let op = Operation {
        hosts: field(at, "hosts", "notHosts", &o.hosts, &o.not_hosts, m::host)?,
        ports: field(at, "ports", "notPorts", &o.ports, &o.not_ports, m::port)?,
        methods: field(
            at,
            "methods",
            "notMethods",
            &o.methods,
            &o.not_methods,
            string_matcher(MatchOptions::new()),
        )?,
        paths: PathSet::parse(&format!("{at}.paths"), &o.paths, params)?,
        not_paths: PathSet::parse(&format!("{at}.notPaths"), &o.not_paths, params)?,
    };
    let paths = !op.paths.is_empty() || !op.not_paths.is_empty();
    if !(op.hosts.is_set() || op.ports.is_set() || op.methods.is_set() || paths) {
        return Err(ConfigError::new(
            at,
            "an operation must set at least one field",
        ));
    }
    Ok(op)
}

fn compile_condition(
    at: &str,
    c: &ConditionConfig,
    params: PathParameters,
) -> Result<Condition, ConfigError> {
    let key_field = format!("{at}.key");
    let attr = parse_key(&key_field, &c.key)?;
    if c.values.is_empty() && c.not_values.is_empty() {
        return Err(ConfigError::new(
            at,
            format!("`{}` needs `values` or `notValues`", c.key),
        ));
    }
    let compile = |name: &str, list: &[String]| -> Result<Option<Values>, ConfigError> {
        if list.is_empty() {
            return Ok(None);
        }
        let each = |i: usize| format!("{at}.{name}[{i}]");
        let strings = |opts: MatchOptions<'static>| {
            list.iter()
                .enumerate()
                .map(|(i, v)| StringMatcher::parse(&each(i), v, &opts))
                .collect::<Result<Vec<_>, _>>()
                .map(Values::Strings)
        };
        let values = match &attr {
            Attr::Header(_) => strings(MatchOptions::new().allow_empty())?,
            Attr::Path => {
                let values = strings(MatchOptions::new())?;
                if let Values::Strings(ms) = &values {
                    for (i, matcher) in ms.iter().enumerate() {
                        m::check_path_value(&each(i), matcher, params)?;
                    }
                }
                values
            }
            Attr::Authority => Values::Strings(
                list.iter()
                    .enumerate()
                    .map(|(i, v)| m::host(&each(i), v))
                    .collect::<Result<_, _>>()?,
            ),
            Attr::SourceIp | Attr::RemoteIp | Attr::DestinationIp => Values::Ips(
                list.iter()
                    .enumerate()
                    .map(|(i, v)| m::ip_block(&each(i), v))
                    .collect::<Result<_, _>>()?,
            ),
            Attr::DestinationPort => Values::Ports(
                list.iter()
                    .enumerate()
                    .map(|(i, v)| m::port(&each(i), v))
                    .collect::<Result<_, _>>()?,
            ),
            Attr::SourcePrincipal => Values::Strings(
                list.iter()
                    .enumerate()
                    .map(|(i, v)| m::principal(&each(i), v))
                    .collect::<Result<_, _>>()?,
            ),
            Attr::AuthPrincipal => Values::RequestPrincipals(
                list.iter()
                    .enumerate()
                    .map(|(i, v)| RequestPrincipal::parse(&each(i), v))
                    .collect::<Result<_, _>>()?,
            ),
            Attr::Sni => Values::Strings(
                list.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        StringMatcher::parse(
                            &each(i),
                            &v.to_ascii_lowercase(),
                            &MatchOptions::new(),
                        )
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => strings(MatchOptions::new())?,
        };
        Ok(Some(values))
    };
    Ok(Condition {
        values: compile("values", &c.values)?,
        not_values: compile("notValues", &c.not_values)?,
        attr,
        ignored: false,
    })
}

fn parse_key(field: &str, key: &str) -> Result<Attr, ConfigError> {
    let unsupported = || {
        ConfigError::new(
            field,
            format!("unsupported key `{key}`; supported: {SUPPORTED_WHEN_KEYS}"),
        )
    };
    let attr = match key {
        "source.ip" => Attr::SourceIp,
        "remote.ip" => Attr::RemoteIp,
        "source.namespace" => Attr::SourceNamespace,
        "source.principal" => Attr::SourcePrincipal,
        "request.auth.principal" => Attr::AuthPrincipal,
        "request.auth.audiences" => Attr::AuthAudiences,
        "request.auth.presenter" => Attr::AuthPresenter,
        "destination.port" => Attr::DestinationPort,
        "destination.ip" => Attr::DestinationIp,
        "connection.sni" => Attr::Sni,
        _ => {
            if let Some(inner) = key
                .strip_prefix("request.headers[")
                .and_then(|r| r.strip_suffix(']'))
            {
                let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
                let name = inner.strip_prefix(':').unwrap_or(inner);
                if name.is_empty() || !name.bytes().all(token) {
                    return Err(ConfigError::new(
                        field,
                        format!("`{key}`: `{inner}` is not a header name"),
                    ));
                }
                match inner.to_ascii_lowercase().as_str() {
                    ":path" => Attr::Path,
                    ":authority" | "host" => Attr::Authority,
                    lower => Attr::Header(lower.to_string()),
                }
            } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
                Attr::AuthClaims(claim_path(rest).ok_or_else(|| {
                    ConfigError::new(
                        field,
                        format!("`{key}`: write claims as `request.auth.claims[name]` or `[a][b]`"),
                    )
                })?)
            } else {
                return Err(unsupported());
            }
        }
    };
    Ok(attr)
}

/// `[a][b]…` ⇒ `["a", "b"]`; `None` unless it is one or more non-empty bracketed names.
fn claim_path(mut rest: &str) -> Option<Vec<String>> {
    let mut path = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let name = inner.get(..end)?;
        if name.is_empty() || name.contains('[') {
            return None;
        }
        path.push(name.to_string());
        rest = inner.get(end.saturating_add(1)..)?;
    }
    (!path.is_empty()).then_some(path)
}
