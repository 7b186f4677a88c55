//! Named upstream clusters for `proxy_http_call`, defined by the test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::runtime::lock;

/// An HTTP callout as the cluster receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutRequest {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    pub timeout: Duration,
}

impl CalloutRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::outcome::first(&self.headers, name)
    }
}

/// A callout response (`:status` is added from `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl CalloutResponse {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        CalloutResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
            trailers: Vec::new(),
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

type Handler = Arc<dyn Fn(&CalloutRequest) -> CalloutResponse + Send + Sync>;

#[derive(Clone)]
enum Behavior {
    Static(CalloutResponse),
    Handler(Handler),
    /// The stream is reset: `on_http_call_response` with 0 headers (Envoy `onFailure(Reset)`).
    Reset,
    /// Connection refused: Envoy's router answers 503 (observed in Envoy 1.40).
    Dead,
    /// Never answers: the callout's timeout fires (router 504 `upstream request timeout`).
    Hang,
    /// Accepts the connection and closes it before answering: Envoy's router answers 503.
    Closes,
    /// A real gRPC server (plaintext HTTP/2) at this address, for `proxy_grpc_call` and
    /// `proxy_grpc_stream` (`envoy_model::grpc`).
    Grpc(SocketAddr),
}

/// A cluster a filter can call with `proxy_http_call`.
#[derive(Clone)]
pub struct Cluster {
    behavior: Behavior,
    latency: Duration,
}

impl Cluster {
    /// Always answers `response`.
    pub fn respond(response: CalloutResponse) -> Self {
        Cluster {
            behavior: Behavior::Static(response),
            latency: Duration::ZERO,
        }
    }
    /// Answers with `f(request)`.
    pub fn handler(f: impl Fn(&CalloutRequest) -> CalloutResponse + Send + Sync + 'static) -> Self {
        Cluster {
            behavior: Behavior::Handler(Arc::new(f)),
            latency: Duration::ZERO,
        }
    }
    /// Resets every stream (callback with 0 headers).
    pub fn reset() -> Self {
        Cluster {
            behavior: Behavior::Reset,
            latency: Duration::ZERO,
        }
    }
    /// No upstream listening: 503 from Envoy's router.
    pub fn dead() -> Self {
        Cluster {
            behavior: Behavior::Dead,
            latency: Duration::ZERO,
        }
    }
    /// Accepts and closes the connection without answering: 503 from Envoy's router.
    pub fn closes() -> Self {
        Cluster {
            behavior: Behavior::Closes,
            latency: Duration::ZERO,
        }
    }
    /// Never answers; callouts end by their timeout.
    pub fn hang() -> Self {
        Cluster {
            behavior: Behavior::Hang,
            latency: Duration::ZERO,
        }
    }
    /// A real gRPC server listening at `address` (plaintext HTTP/2): gRPC calls and streams go
    /// to it, as in Envoy with a STATIC cluster of that address.
    pub fn grpc(address: SocketAddr) -> Self {
        Cluster {
            behavior: Behavior::Grpc(address),
            latency: Duration::ZERO,
        }
    }
    /// Answer after `d` (on the host clock).
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }
}

/// What `on_http_call_response` receives; `headers == None` means 0 headers (failure).
#[derive(Debug, Clone, Default)]
pub(crate) struct CalloutResult {
    pub headers: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    pub body: Vec<u8>,
    pub trailers: Vec<(Vec<u8>, Vec<u8>)>,
}

fn router_reply(status: u16, body: &str) -> CalloutResult {
    CalloutResult {
        headers: Some(vec![
            (b":status".to_vec(), status.to_string().into_bytes()),
            (
                b"content-length".to_vec(),
                body.len().to_string().into_bytes(),
            ),
            (b"content-type".to_vec(), b"text/plain".to_vec()),
        ]),
        body: body.as_bytes().to_vec(),
        trailers: Vec::new(),
    }
}

fn from_response(r: CalloutResponse) -> CalloutResult {
    let mut headers = vec![(b":status".to_vec(), r.status.to_string().into_bytes())];
    headers.extend(
        r.headers
            .into_iter()
            .map(|(n, v)| (n.to_ascii_lowercase().into_bytes(), v.into_bytes())),
    );
    CalloutResult {
        headers: Some(headers),
        body: r.body,
        trailers: r
            .trailers
            .into_iter()
            .map(|(n, v)| (n.to_ascii_lowercase().into_bytes(), v.into_bytes()))
            .collect(),
    }
}

/// Where a cluster takes gRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrpcRoute {
    /// A real gRPC server.
    Server(SocketAddr),
    /// Nothing listens (`Cluster::dead`).
    Down,
    /// A modelled HTTP answer (`Cluster::respond` / `handler`): what Envoy's gRPC client makes of
    /// it is modelled for unary calls (`Clusters::grpc_over_http`).
    Http,
    /// A reset, a closing or a hanging upstream: no gRPC is modelled for it.
    Unmodelled,
}

/// Registered clusters plus a log of the callouts made.
#[derive(Default)]
pub(crate) struct Clusters {
    clusters: Mutex<HashMap<String, Cluster>>,
    log: Mutex<Vec<CalloutRequest>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Clusters {
    pub fn insert(&self, name: &str, cluster: Cluster) {
        lock(&self.clusters).insert(name.to_string(), cluster);
    }

    pub fn exists(&self, name: &str) -> bool {
        lock(&self.clusters).contains_key(name)
    }

    /// Where gRPC to cluster `name` goes (`None`: no such cluster).
    pub fn grpc_route(&self, name: &str) -> Option<GrpcRoute> {
        lock(&self.clusters).get(name).map(|c| match c.behavior {
            Behavior::Grpc(a) => GrpcRoute::Server(a),
            Behavior::Dead => GrpcRoute::Down,
            Behavior::Static(_) | Behavior::Handler(_) => GrpcRoute::Http,
            Behavior::Reset | Behavior::Closes | Behavior::Hang => GrpcRoute::Unmodelled,
        })
    }

    /// A unary gRPC call to a modelled HTTP cluster, as Envoy's gRPC client reads the cluster's
    /// answer: `grpc-status` (and `grpc-message`) when the answer has one, else 200 ⇒ INTERNAL and
    /// any other status as `httpToGrpcStatus` maps it. (status, grpc-message)
    pub fn grpc_over_http(&self, request: CalloutRequest) -> (u32, String) {
        let (result, _) = self.call(request);
        let headers = result.headers.unwrap_or_default();
        let find = |name: &[u8]| {
            headers
                .iter()
                .chain(&result.trailers)
                .find(|(n, _)| n.as_slice() == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        if let Some(code) = find(b"grpc-status") {
            return (
                code.trim().parse().unwrap_or(2),
                find(b"grpc-message").unwrap_or_default(),
            );
        }
        let status: i64 = find(b":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        match status {
            200 => (13, String::new()),
            s => (super::hcm::http_to_grpc_status(s) as u32, String::new()),
        }
    }

    /// Make the next `times` callouts to `name` fail with a reset.
    pub fn fail_next(&self, name: &str, times: u32) {
        lock(&self.failures).insert(name.to_string(), times);
    }

    pub fn log(&self) -> Vec<CalloutRequest> {
        lock(&self.log).clone()
    }

    /// Runs the cluster: the result and after how long (ns) it arrives.
    pub fn call(&self, req: CalloutRequest) -> (CalloutResult, u64) {
        lock(&self.log).push(req.clone());
        let timeout_ns = req.timeout.as_nanos() as u64;
        let forced_reset = {
            let mut f = lock(&self.failures);
            match f.get_mut(&req.cluster) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        let cluster = lock(&self.clusters).get(&req.cluster).cloned();
        let Some(cluster) = cluster else {
            return (router_reply(503, "no healthy upstream"), 0);
        };
        let latency = cluster.latency.as_nanos() as u64;
        if forced_reset {
            return (CalloutResult::default(), latency.min(timeout_ns));
        }
        let timeout = || (router_reply(504, "upstream request timeout"), timeout_ns);
        if latency > timeout_ns && timeout_ns > 0 {
            return timeout();
        }
        match cluster.behavior {
            Behavior::Static(r) => (from_response(r), latency),
            Behavior::Handler(f) => (from_response(f(&req)), latency),
            Behavior::Reset => (CalloutResult::default(), latency),
            Behavior::Closes => (
                router_reply(
                    503,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                ),
                latency,
            ),
            Behavior::Dead => (
                router_reply(
                    503,
                    "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused",
                ),
                latency,
            ),
            Behavior::Hang => timeout(),
            // Envoy's HTTP/2 client would make the call; the harness only speaks gRPC to it.
            Behavior::Grpc(address) => (
                router_reply(
                    503,
                    &format!("harness: an HTTP callout to the gRPC cluster `{}` ({address}) is not modelled", req.cluster),
                ),
                latency,
            ),
        }
    }
}
