//! The header-limits stage: the decision on one request's headers and what the adapter does with
//! it, over a [`RequestView`]. The standalone filter (`lib.rs`) and the bundle (`meshward.wasm`)
//! both run it.
//!
//! Host failures fail closed: a header map the host cannot hand over (or hands over malformed),
//! or a header we were told to drop but could not, ends the request with 500 `internal error`.
//! A limit filter that let such a request through would be bypassable by whatever makes the
//! host call fail; 500 rather than 400/431 because the client did nothing wrong that we know of.

use header_limits_core::{
    decide, request_path, Config, Reason, RequestFacts, Verdict, DROPPED_UNDERSCORE_METRIC,
};
use meshward_host::{Counters, RequestView, StageResult};

/// The filter's name: its log prefix, its counters' owner, its bundle section is `headerLimits`.
pub const NAME: &str = "header-limits";

const INTERNAL_ERROR_BODY: &str = "internal error";
const INTERNAL_ERROR_DETAILS: &str = "header_limits.internal_error";

/// One configured header-limits: the config and its counters (per VM).
pub struct Stage {
    config: Config,
    /// [`Reason::ALL`]'s counters in that order, then [`DROPPED_UNDERSCORE_METRIC`].
    counters: Counters,
}

/// Index of the underscore-drop counter in [`Stage::counters`].
const DROPPED_COUNTER: usize = Reason::ALL.len();

/// Define every counter (at configure time, so they exist, at 0, before the first request).
fn define_counters() -> Counters {
    let names = Reason::ALL
        .iter()
        .map(|reason| reason.metric())
        .chain([DROPPED_UNDERSCORE_METRIC]);
    Counters::define(NAME, names)
}

/// Index of `reason`'s rejection counter in [`Stage::counters`].
fn rejection_counter(reason: Reason) -> usize {
    // Every reason is in ALL; an impossible miss lands out of range, which Counters ignores.
    Reason::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(usize::MAX)
}

impl Stage {
    /// The stage for a parsed config: logs it and defines the counters.
    pub fn new(config: Config) -> Self {
        log::info!("header-limits: configured: {config:?}");
        Self {
            config,
            counters: define_counters(),
        }
    }

    /// Decide on the request headers: `Continue` (after dropping underscore headers if so
    /// configured) or `Replied` (the core's local reply, or 500 on a host failure).
    pub fn on_request_headers(&self, req: &mut RequestView) -> StageResult {
        let headers = match req.headers() {
            Ok(headers) => headers,
            Err(status) => {
                return internal_error(&format!(
                    "cannot read the request headers (host status {status})"
                ))
            }
        };
        let facts = match HostFacts::new(headers) {
            Ok(facts) => facts,
            Err(why) => return internal_error(why),
        };
        match decide(&self.config, &facts) {
            Verdict::Continue {
                drop,
                dropped_entries,
            } => {
                // Owned: the view is borrowed by the facts until the edits.
                let drop: Vec<Vec<u8>> = drop.into_iter().map(<[u8]>::to_vec).collect();
                for name in drop {
                    if let Err(status) = req.remove_header(&name) {
                        return internal_error(&format!(
                            "cannot drop header `{}` (host status {status})",
                            String::from_utf8_lossy(&name)
                        ));
                    }
                }
                if dropped_entries > 0 {
                    let entries = u64::try_from(dropped_entries).unwrap_or(u64::MAX);
                    self.counters.add(DROPPED_COUNTER, entries);
                    log::debug!(
                        "header-limits: dropped {dropped_entries} header(s) with underscores"
                    );
                }
                StageResult::Continue
            }
            Verdict::Reject(rejection) => {
                self.counters.increment(rejection_counter(rejection.reason));
                log::debug!(
                    "header-limits: rejected request: {} ({})",
                    rejection.reason.as_str(),
                    rejection.status
                );
                reply(rejection.status, rejection.reason.details(), rejection.body)
            }
        }
    }
}

/// Fail closed with 500 and say why in the log.
pub fn internal_error(why: &str) -> StageResult {
    log::error!("header-limits: {why}; answering 500");
    reply(500, INTERNAL_ERROR_DETAILS, INTERNAL_ERROR_BODY)
}

/// Send a local reply with no extra headers (the host adds `content-type: text/plain` to a reply
/// with a body, like Envoy's own 431) and stop the request. If even that fails, the request stays
/// paused (never forwarded): the host's stream timeout ends it.
fn reply(status: u32, details: &str, body: &str) -> StageResult {
    const NO_HEADERS: &[(&str, &str)] = &[];
    if let Err(err) =
        meshward_host::send_local_response(status, details, body.as_bytes(), NO_HEADERS, None)
    {
        log::error!(
            "header-limits: cannot send the {status} reply (host status {err}); request stays paused"
        );
    }
    StageResult::Replied
}

/// The request as the host handed it over: the header map (it is all the decision looks at).
struct HostFacts<'raw> {
    headers: Vec<(&'raw [u8], &'raw [u8])>,
}

impl<'raw> HostFacts<'raw> {
    /// The facts of a header map; why not, for the 500's log line.
    fn new(headers: Vec<(&'raw [u8], &'raw [u8])>) -> Result<Self, &'static str> {
        // Envoy's codecs always give a request `:method` and `:path`; a map without them is a
        // failed read (an empty map would otherwise pass every limit), not a small request.
        let has = |name: &[u8]| headers.iter().any(|(n, _)| *n == name);
        if !has(b":method") || !has(b":path") {
            return Err("the host sent a request header map without :method or :path");
        }
        Ok(Self { headers })
    }
}

impl<'raw> RequestFacts for HostFacts<'raw> {
    type Name = &'raw [u8];
    type Value = &'raw [u8];

    fn headers(&self) -> &[(&'raw [u8], &'raw [u8])] {
        &self.headers
    }

    fn path(&self) -> &[u8] {
        request_path(&self.headers)
    }
}

#[cfg(test)]
mod tests {
    //! Natively every host call fails (meshward-host's stubs answer UNIMPLEMENTED), which is
    //! exactly the host-failure path: the stage must fail closed, never continue or panic.
    use super::*;

    #[test]
    fn an_unreadable_header_map_is_answered() {
        let stage = Stage::new(Config::default());
        let mut view = RequestView::standalone();
        assert_eq!(stage.on_request_headers(&mut view), StageResult::Replied);
    }

    #[test]
    fn a_map_without_method_or_path_is_a_failed_read() {
        assert!(HostFacts::new(vec![(b":path", b"/")]).is_err());
        assert!(HostFacts::new(vec![(b":method", b"GET"), (b":path", b"/")]).is_ok());
    }

    #[test]
    fn every_reason_and_the_drop_count_have_their_own_counter() {
        let counters = define_counters();
        assert_eq!(counters.len(), Reason::ALL.len() + 1);
        for reason in Reason::ALL {
            assert_eq!(
                counters.name(rejection_counter(reason)),
                Some(reason.metric())
            );
        }
        assert_eq!(
            counters.name(DROPPED_COUNTER),
            Some(DROPPED_UNDERSCORE_METRIC)
        );
    }
}
