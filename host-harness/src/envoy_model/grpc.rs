//! Envoy's async gRPC client as a wasm module drives it (`proxy_grpc_call`, `proxy_grpc_stream`),
//! against a **real** gRPC server: a cluster made with `Cluster::grpc(address)` is reached over
//! plaintext HTTP/2 (the `h2` crate on a small tokio runtime of its own), so a module's calls and
//! streams meet the same server in the harness as in Envoy. What the module sees is Envoy's
//! view of the exchange: the headers Envoy's client sends, its statuses for transport failures and
//! deadlines, and which callbacks a unary call gets (a message, or a close — never metadata).
//!
//! The server's answers arrive on the runtime's thread and wait in an inbox until the host
//! delivers them (`Host` waits for them before it moves its clock: an exchange takes no virtual
//! time). Calibrated against Envoy 1.40 by tests/scenarios/conformance/grpc.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use super::protobuf::{read_len, read_tag, read_varint, skip_field};
use crate::runtime::{lock, Thread};

/// Name/value pairs as the module reads them from a metadata map.
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// gRPC status codes the model produces itself.
const UNKNOWN: u32 = 2;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;

/// What the first argument of `proxy_grpc_call` / `proxy_grpc_stream` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServiceRef {
    /// A serialized `envoy.config.core.v3.GrpcService` with `envoy_grpc` (Envoy then skips its
    /// cluster check: an unknown cluster fails the call after the dispatch).
    Proto(EnvoyGrpc),
    /// A serialized `GrpcService` for Google's C++ gRPC client (`google_grpc`): not modelled.
    GoogleGrpc,
    /// Bytes that parse as a `GrpcService` naming no client — the empty string, and names such
    /// as `h2` or `echo1`: Envoy 1.40 aborts (`panic: unset oneof`).
    NoClient,
    /// Bytes that do not parse as a `GrpcService`: Envoy takes them as a cluster name.
    ClusterName(String),
}

/// `GrpcService.envoy_grpc`: the fields the harness honours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvoyGrpc {
    pub cluster_name: String,
    /// `authority`: the `:authority` to send instead of the cluster name.
    pub authority: Option<String>,
    /// `skip_envoy_headers`: no `x-envoy-internal`.
    pub skip_envoy_headers: bool,
}

/// How Envoy 1.40 reads the service argument: `GrpcService::ParseFromString`, and when that
/// fails, the bytes as a cluster name. (A minimal protobuf wire walk rather than a protobuf crate:
/// only "does it parse" and three fields are needed.)
pub(crate) fn service_ref(bytes: &[u8]) -> ServiceRef {
    // GrpcService: envoy_grpc = 1, google_grpc = 2 (messages); EnvoyGrpc: cluster_name = 1,
    // authority = 2 (strings), skip_envoy_headers = 5 (bool).
    let Some(fields) = parse_message(bytes, &[]) else {
        return ServiceRef::ClusterName(String::from_utf8_lossy(bytes).into_owned());
    };
    // Message fields parse recursively: a malformed one fails the whole parse. Occurrences of
    // a message field merge (the last scalar wins); envoy_grpc and google_grpc are a oneof (the
    // last one set wins).
    let mut envoy_grpc: Vec<(u32, Field<'_>)> = Vec::new();
    let mut target = None;
    for (n, v) in &fields {
        match (n, v) {
            (1, Field::Bytes(b)) => match parse_message(b, &[1, 2]) {
                Some(inner) => {
                    envoy_grpc.extend(inner);
                    target = Some(1);
                }
                None => {
                    return ServiceRef::ClusterName(String::from_utf8_lossy(bytes).into_owned())
                }
            },
            (2, Field::Bytes(b)) => {
                if parse_message(b, &[]).is_none() {
                    return ServiceRef::ClusterName(String::from_utf8_lossy(bytes).into_owned());
                }
                target = Some(2);
            }
            _ => {}
        }
    }
    let last_bytes = |n: u32| {
        envoy_grpc.iter().rev().find_map(|(f, v)| match v {
            Field::Bytes(b) if *f == n => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
    };
    match target {
        Some(1) => ServiceRef::Proto(EnvoyGrpc {
            cluster_name: last_bytes(1).unwrap_or_default(),
            authority: last_bytes(2).filter(|a| !a.is_empty()),
            skip_envoy_headers: envoy_grpc
                .iter()
                .rev()
                .find_map(|(n, v)| match v {
                    Field::Varint(x) if *n == 5 => Some(*x != 0),
                    _ => None,
                })
                .unwrap_or(false),
        }),
        Some(_) => ServiceRef::GoogleGrpc,
        None => ServiceRef::NoClient,
    }
}

/// A top-level field of a protobuf message: a varint's value or a length-delimited field's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The top-level varint and length-delimited fields of a protobuf message (field number,
/// value), or `None` when `ParseFromString` would fail on the bytes (`envoy_model::protobuf`);
/// `strings` are proto3 strings, which must be UTF-8.
fn parse_message<'a>(mut b: &'a [u8], strings: &[u32]) -> Option<Vec<(u32, Field<'a>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (field, wire) = read_tag(&mut b)?;
        match wire {
            0 => out.push((field, Field::Varint(read_varint(&mut b)?))),
            2 => {
                let value = read_len(&mut b)?;
                if strings.contains(&field) {
                    std::str::from_utf8(value).ok()?;
                }
                out.push((field, Field::Bytes(value)));
            }
            _ => skip_field(&mut b, field, wire, 0)?,
        }
    }
    Some(out)
}

/// Who gets an exchange's callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct GrpcTarget {
    pub thread: Thread,
    pub filter: usize,
    /// The root context: cpp-host makes every callout on it, and its callbacks carry its id.
    pub context: u32,
    pub token: u32,
}

/// One callback's worth of the server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GrpcEventKind {
    InitialMetadata(Pairs),
    Message(Vec<u8>),
    TrailingMetadata(Pairs),
    Close { status: u32, message: String },
}

#[derive(Debug)]
pub(crate) struct GrpcEvent {
    pub target: GrpcTarget,
    pub kind: GrpcEventKind,
    /// The exchange's last event (a unary call's answer or failure, a stream's close).
    pub last: bool,
}

/// A request to start an exchange.
pub(crate) struct GrpcRequest {
    pub target: GrpcTarget,
    pub address: SocketAddr,
    /// `:authority`: the cluster name (or the `GrpcService`'s `authority`), as Envoy's client
    /// sends it.
    pub authority: String,
    /// `skip_envoy_headers` of a serialized `GrpcService`: no `x-envoy-internal`.
    pub skip_envoy_headers: bool,
    pub service: String,
    pub method: String,
    pub metadata: Pairs,
    /// Unary calls: the request message and the deadline (`None`: none).
    pub unary: Option<(Vec<u8>, Option<Duration>)>,
}

/// What the module does to an open stream.
enum StreamCommand {
    Send(Vec<u8>, bool),
    HalfClose,
}

/// A live exchange: how to reach its task, and whether it is bound to end by itself (a unary
/// call; a stream the module half-closed) — what the host waits for before moving its clock.
struct Live {
    commands: Option<tokio::sync::mpsc::UnboundedSender<StreamCommand>>,
    abort: Option<tokio::task::AbortHandle>,
    ends_by_itself: bool,
}

/// The client: its runtime, the exchanges in flight, and the inbox of their answers.
pub(crate) struct GrpcClient {
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
    live: Mutex<HashMap<GrpcTarget, Live>>,
    sender: Mutex<mpsc::Sender<GrpcEvent>>,
    inbox: Mutex<mpsc::Receiver<GrpcEvent>>,
    /// A stream was opened, sent on or half-closed since the host last waited: only then is an
    /// answer on an open stream worth a quiet wait.
    activity: std::sync::atomic::AtomicBool,
}

impl Default for GrpcClient {
    fn default() -> Self {
        let (sender, inbox) = mpsc::channel();
        GrpcClient {
            runtime: OnceLock::new(),
            live: Mutex::new(HashMap::new()),
            sender: Mutex::new(sender),
            inbox: Mutex::new(inbox),
            activity: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// How long the host waits for an exchange that is bound to end (a unary call without deadline,
/// a half-closed stream) before it gives up on it: far beyond any test server's answer.
pub(crate) const BOUNDED_WAIT: Duration = Duration::from_secs(30);
/// How long the host waits for an open stream's next message before it lets time move on.
pub(crate) const QUIET_WAIT: Duration = Duration::from_millis(300);

impl GrpcClient {
    fn runtime(&self) -> Result<&tokio::runtime::Runtime, String> {
        self.runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("meshward-grpc")
                    .enable_io()
                    .enable_time()
                    .build()
                    .map_err(|e| format!("harness: cannot start the gRPC client runtime: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Starts a unary call or opens a stream; its answers arrive in the inbox.
    pub fn start(&self, request: GrpcRequest) -> Result<(), String> {
        let runtime = self.runtime()?;
        let target = request.target;
        let events = lock(&self.sender).clone();
        let unary = request.unary.is_some();
        let (commands, receiver) = if unary {
            (None, None)
        } else {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        };
        let task = runtime.spawn(exchange(request, receiver, events));
        self.touch();
        lock(&self.live).insert(
            target,
            Live {
                commands,
                abort: Some(task.abort_handle()),
                ends_by_itself: unary,
            },
        );
        Ok(())
    }

    /// An exchange Envoy accepted (it has a token) but fails at once: its failure's events wait
    /// in the inbox (Envoy delivers them to the root context right after the dispatch).
    pub fn fail(&self, target: GrpcTarget, failure: &Failure, unary: bool) {
        lock(&self.live).insert(
            target,
            Live {
                commands: None,
                abort: None,
                ends_by_itself: true,
            },
        );
        let sender = lock(&self.sender);
        for (kind, last) in failure.events(unary) {
            let _ = sender.send(GrpcEvent { target, kind, last });
        }
    }

    /// Sends a message on an open stream (`end_stream`: and half-closes it).
    pub fn send(&self, target: GrpcTarget, message: Vec<u8>, end_stream: bool) {
        let mut live = lock(&self.live);
        if let Some(l) = live.get_mut(&target) {
            if let Some(c) = &l.commands {
                let _ = c.send(StreamCommand::Send(message, end_stream));
            }
            if end_stream {
                l.ends_by_itself = true;
            }
        }
        self.touch();
    }

    /// Half-closes a stream (`proxy_grpc_close`): the server's answers still arrive.
    pub fn half_close(&self, target: GrpcTarget) {
        let mut live = lock(&self.live);
        if let Some(l) = live.get_mut(&target) {
            if let Some(c) = &l.commands {
                let _ = c.send(StreamCommand::HalfClose);
            }
            l.ends_by_itself = true;
        }
        self.touch();
    }

    fn touch(&self) {
        self.activity
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a stream saw the module's activity since the last call.
    pub fn take_activity(&self) -> bool {
        self.activity
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Cancels a call or resets a stream: no more callbacks for it.
    pub fn cancel(&self, target: GrpcTarget) {
        if let Some(l) = lock(&self.live).remove(&target) {
            if let Some(a) = l.abort {
                a.abort();
            }
        }
    }

    /// Marks an exchange finished once its last event is delivered.
    pub fn finished(&self, target: &GrpcTarget) {
        lock(&self.live).remove(target);
    }

    /// Exchanges in flight: (bound to end by themselves, open streams).
    pub fn pending(&self) -> (usize, usize) {
        let live = lock(&self.live);
        let ending = live.values().filter(|l| l.ends_by_itself).count();
        (ending, live.len() - ending)
    }

    /// The next answer, waiting at most `wait`.
    pub fn next_event(&self, wait: Duration) -> Option<GrpcEvent> {
        let inbox = lock(&self.inbox);
        if wait.is_zero() {
            inbox.try_recv().ok()
        } else {
            inbox.recv_timeout(wait).ok()
        }
    }
}

/// gRPC's `grpc-timeout` for a deadline, as Envoy writes it (`Grpc::Common::toGrpcTimeout`:
/// milliseconds, at most 8 digits, else a coarser unit).
fn grpc_timeout(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 100_000_000 {
        format!("{ms}m")
    } else if ms / 1000 < 100_000_000 {
        format!("{}S", ms / 1000)
    } else if ms / 60_000 < 100_000_000 {
        format!("{}M", ms / 60_000)
    } else {
        format!("{}H", (ms / 3_600_000).min(99_999_999))
    }
}

/// A gRPC message frame: uncompressed flag, big-endian length, the bytes.
fn frame(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.extend_from_slice(&[0]);
    b.extend_from_slice(&(message.len() as u32).to_be_bytes());
    b.extend_from_slice(message);
    b.freeze()
}

fn pairs_of(map: &http::HeaderMap) -> Pairs {
    map.iter()
        .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// `grpc-status` and `grpc-message` of trailers (or trailers-only headers).
fn status_of(map: &http::HeaderMap) -> Option<(u32, String)> {
    let status = map.get("grpc-status")?;
    let code = std::str::from_utf8(status.as_bytes())
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(UNKNOWN);
    let message = map
        .get("grpc-message")
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    Some((code, message))
}

/// `grpc-message` is percent-encoded on the wire; Envoy hands the module the decoded text.
fn percent_decode(b: &[u8]) -> String {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| {
            b.get(j)
                .and_then(|h| (*h as char).to_digit(16))
                .map(|d| d as u8)
        };
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`: a non-200 answer without `grpc-status`.
fn http_to_grpc(status: u16) -> u32 {
    match status {
        400 => INTERNAL,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    }
}

/// Pulls whole messages off the front of `buf`.
fn take_messages(buf: &mut BytesMut) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(header) = buf.get(..5) {
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        buf.advance(5);
        out.push(buf.split_to(len).to_vec());
    }
    out
}

/// How an exchange failed, in the parts Envoy's message is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub status: u32,
    /// `grpc-message` (the server's, or the text of Envoy's own local reply).
    pub grpc_message: String,
    /// The response code details of the answer (`via_upstream` for the server's own).
    pub details: String,
    /// Envoy answered itself (a trailers-only gRPC local reply): a stream sees its headers as
    /// trailing metadata.
    pub local: bool,
}

impl Failure {
    pub fn upstream(status: u32, grpc_message: String) -> Self {
        Failure {
            status,
            grpc_message,
            details: VIA_UPSTREAM.to_string(),
            local: false,
        }
    }

    /// Nothing listens at the cluster's address (Envoy's router: connection refused).
    pub fn connect_refused() -> Self {
        Failure {
            status: UNAVAILABLE,
            grpc_message: "upstream connect error or disconnect/reset before headers. reset \
                           reason: remote connection failure"
                .to_string(),
            details: "upstream_reset_before_response_started{remote_connection_failure|\
                      delayed_connect_error:_Connection_refused}"
                .to_string(),
            local: true,
        }
    }

    /// A `GrpcService` naming a cluster Envoy does not have (it skipped its cluster check).
    pub fn no_cluster() -> Self {
        Failure {
            status: UNAVAILABLE,
            grpc_message: "Cluster not available".to_string(),
            details: String::new(),
            local: false,
        }
    }

    /// A call the server closed with OK but no message: INTERNAL with no message at all (Envoy's
    /// `AsyncRequestImpl` fails it itself, without response code details).
    fn no_answer() -> Self {
        Failure {
            status: INTERNAL,
            grpc_message: String::new(),
            details: String::new(),
            local: false,
        }
    }

    /// Initial metadata Envoy's header validation refuses.
    pub fn invalid_metadata() -> Self {
        Failure {
            status: UNAVAILABLE,
            grpc_message: String::new(),
            details: String::new(),
            local: false,
        }
    }

    /// The call's timeout fired first (Envoy's own deadline: UNAVAILABLE, not DEADLINE_EXCEEDED).
    fn timeout() -> Self {
        Failure {
            status: UNAVAILABLE,
            grpc_message: "upstream request timeout".to_string(),
            details: "response_timeout".to_string(),
            local: true,
        }
    }

    /// The connection broke after the request was sent.
    fn reset() -> Self {
        Failure {
            status: UNAVAILABLE,
            grpc_message: "upstream connect error or disconnect/reset before headers. reset \
                           reason: connection termination"
                .to_string(),
            details: "upstream_reset_before_response_started{connection_termination}".to_string(),
            local: true,
        }
    }

    /// What `proxy_get_status` gives in the close callback: `grpc-message{details}`, or the
    /// details alone when there is no message.
    pub fn message(&self) -> String {
        if self.grpc_message.is_empty() {
            self.details.clone()
        } else {
            format!("{}{{{}}}", self.grpc_message, self.details)
        }
    }

    /// The close callback's event: the status, and [`Failure::message`] for `proxy_get_status`.
    pub fn close(&self) -> GrpcEventKind {
        GrpcEventKind::Close {
            status: self.status,
            message: self.message(),
        }
    }

    /// The trailers-only headers of Envoy's gRPC local reply.
    fn headers(&self) -> Pairs {
        vec![
            (b":status".to_vec(), b"200".to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (
                b"grpc-status".to_vec(),
                self.status.to_string().into_bytes(),
            ),
            (
                b"grpc-message".to_vec(),
                self.grpc_message.clone().into_bytes(),
            ),
        ]
    }

    /// The events a failure gives: a call, its close; a stream, Envoy's local reply as a
    /// trailers-only answer (empty initial metadata, the reply's headers as trailing metadata)
    /// and then its close.
    pub fn events(&self, unary: bool) -> Vec<(GrpcEventKind, bool)> {
        let close = self.close();
        if unary || !self.local {
            return vec![(close, true)];
        }
        vec![
            (GrpcEventKind::InitialMetadata(Vec::new()), false),
            (GrpcEventKind::TrailingMetadata(self.headers()), false),
            (close, true),
        ]
    }
}

/// The response code details of an answer from the server itself.
const VIA_UPSTREAM: &str = "via_upstream";

/// One call or stream, start to end; every event it produces goes to `events`.
async fn exchange(
    request: GrpcRequest,
    commands: Option<tokio::sync::mpsc::UnboundedReceiver<StreamCommand>>,
    events: mpsc::Sender<GrpcEvent>,
) {
    let target = request.target;
    let unary = request.unary.is_some();
    let deadline = request.unary.as_ref().and_then(|(_, d)| *d);
    let emit = |kind: GrpcEventKind, last: bool| {
        let _ = events.send(GrpcEvent { target, kind, last });
    };
    let run = run_exchange(request, commands, &emit);
    let outcome = match deadline {
        Some(d) => match tokio::time::timeout(d, run).await {
            Ok(o) => o,
            Err(_) => Err(Failure::timeout()),
        },
        None => run.await,
    };
    if let Err(failure) = outcome {
        for (kind, last) in failure.events(unary) {
            emit(kind, last);
        }
    }
}

/// Whether Envoy's header validation takes every metadata entry (a name it can lower-case into
/// a valid header name, a value without CR, LF, NUL or other control characters).
pub(crate) fn metadata_is_valid(metadata: &Pairs) -> bool {
    metadata.iter().all(|(n, v)| {
        let name = n.to_ascii_lowercase();
        (name.starts_with(b":") || http::HeaderName::from_bytes(&name).is_ok())
            && http::HeaderValue::from_bytes(v).is_ok()
    })
}

/// The request headers Envoy's gRPC client sends (`Grpc::Common::prepareHeaders`, then the
/// router of its async client): `:method`, `:path`, `:authority` (the cluster, with a module's
/// own `:authority` appended), `te`, `grpc-timeout` for a call (also `0m`), `content-type`, the
/// module's metadata (`-bin` values base64-encoded), `x-envoy-internal`, and
/// `x-envoy-expected-rq-timeout-ms` for a call with a deadline.
fn request_head(request: &GrpcRequest) -> Result<http::Request<()>, String> {
    let mut authority = request.authority.clone();
    let mut metadata = Vec::new();
    for (n, v) in &request.metadata {
        let name = String::from_utf8_lossy(n).to_ascii_lowercase();
        if name == ":authority" {
            authority = format!("{authority},{}", String::from_utf8_lossy(v));
            continue;
        }
        if name.starts_with(':') {
            return Err(format!(
                "harness: gRPC initial metadata with the pseudo-header `{name}` is not modelled"
            ));
        }
        let value = if name.ends_with("-bin") {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(v)
                .into_bytes()
        } else {
            v.clone()
        };
        metadata.push((name, value));
    }
    let uri = format!("http://{authority}/{}/{}", request.service, request.method);
    let mut b = http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("te", "trailers");
    if let Some((_, deadline)) = &request.unary {
        let timeout = deadline.unwrap_or(Duration::ZERO);
        b = b.header("grpc-timeout", grpc_timeout(timeout));
    }
    b = b.header("content-type", "application/grpc");
    // Envoy moves the base64-encoded binary entries after the others.
    let (binary, plain): (Vec<_>, Vec<_>) = metadata.iter().partition(|(n, _)| n.ends_with("-bin"));
    for (n, v) in plain.into_iter().chain(binary) {
        b = b.header(n.as_str(), v.as_slice());
    }
    if !request.skip_envoy_headers {
        b = b.header("x-envoy-internal", "true");
    }
    if let Some((_, Some(d))) = &request.unary {
        b = b.header("x-envoy-expected-rq-timeout-ms", d.as_millis().to_string());
    }
    b.body(())
        .map_err(|e| format!("harness: a gRPC request Envoy would send is not modelled ({e})"))
}

async fn run_exchange(
    request: GrpcRequest,
    mut commands: Option<tokio::sync::mpsc::UnboundedReceiver<StreamCommand>>,
    emit: &impl Fn(GrpcEventKind, bool),
) -> Result<(), Failure> {
    let head = request_head(&request).map_err(|e| Failure {
        status: INTERNAL,
        grpc_message: e,
        details: String::new(),
        local: false,
    })?;
    let tcp = tokio::net::TcpStream::connect(request.address)
        .await
        .map_err(|_| Failure::connect_refused())?;
    let (client, connection) = h2::client::handshake(tcp)
        .await
        .map_err(|_| Failure::reset())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.map_err(|_| Failure::reset())?;
    let (response, mut send) = client
        .send_request(head, false)
        .map_err(|_| Failure::reset())?;
    let started = std::time::Instant::now();
    // Whether the request is complete (Envoy's router then stamps the answer's headers with
    // `x-envoy-upstream-service-time`).
    let request_done = std::sync::atomic::AtomicBool::new(false);
    if let Some((message, _)) = &request.unary {
        let _ = send.send_data(frame(message), true);
        request_done.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let unary = request.unary.is_some();
    // Stream commands flow while the answer is awaited.
    let sender = async {
        if let Some(rx) = commands.as_mut() {
            while let Some(c) = rx.recv().await {
                let (data, end) = match c {
                    StreamCommand::Send(m, end) => (frame(&m), end),
                    StreamCommand::HalfClose => (Bytes::new(), true),
                };
                if !request_done.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = send.send_data(data, end);
                    request_done.store(end, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        std::future::pending::<()>().await
    };
    let receiver = receive(response, unary, emit, || {
        request_done
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| started.elapsed().as_millis().to_string())
    });
    tokio::select! {
        r = receiver => r,
        _ = sender => Ok(()),
    }
}

/// `:status` first, then the answer's headers, as Envoy's header map hands them to a module;
/// last `x-envoy-upstream-service-time` when the router had the whole request by then.
fn with_status(status: u16, map: &http::HeaderMap, service_time: Option<String>) -> Pairs {
    let mut pairs = vec![(b":status".to_vec(), status.to_string().into_bytes())];
    pairs.extend(pairs_of(map));
    if let Some(ms) = service_time {
        pairs.push((b"x-envoy-upstream-service-time".to_vec(), ms.into_bytes()));
    }
    pairs
}

/// Reads the answer: initial metadata, messages, trailers, as Envoy's client reports them.
async fn receive(
    response: h2::client::ResponseFuture,
    unary: bool,
    emit: &impl Fn(GrpcEventKind, bool),
    service_time: impl Fn() -> Option<String>,
) -> Result<(), Failure> {
    let response = response.await.map_err(|_| Failure::reset())?;
    let service_time = service_time();
    let (parts, mut body) = response.into_parts();
    let http_status = parts.status.as_u16();
    let trailers_only = body.is_end_stream();
    if http_status != 200 {
        let (status, message) =
            status_of(&parts.headers).unwrap_or((http_to_grpc(http_status), String::new()));
        return Err(Failure::upstream(status, message));
    }
    if trailers_only {
        let (status, message) = status_of(&parts.headers).unwrap_or((UNKNOWN, String::new()));
        if unary {
            return Err(if status == 0 {
                Failure::no_answer()
            } else {
                Failure::upstream(status, message)
            });
        }
        emit(GrpcEventKind::InitialMetadata(Vec::new()), false);
        emit(
            GrpcEventKind::TrailingMetadata(with_status(http_status, &parts.headers, service_time)),
            false,
        );
        emit(Failure::upstream(status, message).close(), true);
        return Ok(());
    }
    if !unary {
        emit(
            GrpcEventKind::InitialMetadata(with_status(http_status, &parts.headers, service_time)),
            false,
        );
    }
    let mut buf = BytesMut::new();
    let mut answer: Option<Vec<u8>> = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| Failure::reset())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        for m in take_messages(&mut buf) {
            if unary {
                answer = Some(m);
            } else {
                emit(GrpcEventKind::Message(m), false);
            }
        }
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|_| Failure::reset())?
        .unwrap_or_default();
    let (status, message) = status_of(&trailers).unwrap_or((UNKNOWN, String::new()));
    if unary {
        return match (status, answer) {
            (0, Some(m)) => {
                emit(GrpcEventKind::Message(m), true);
                Ok(())
            }
            (0, None) => Err(Failure::no_answer()),
            (s, _) => Err(Failure::upstream(s, message)),
        };
    }
    emit(GrpcEventKind::TrailingMetadata(pairs_of(&trailers)), false);
    // A stream's end is a close even with status 0 (its message is then the details alone).
    emit(Failure::upstream(status, message).close(), true);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_cluster_name_is_not_a_grpc_service_proto() {
        assert_eq!(
            service_ref(b"grpc-echo"),
            ServiceRef::ClusterName("grpc-echo".into())
        );
        assert_eq!(
            service_ref(b"outbound|50051||echo.default.svc.cluster.local"),
            ServiceRef::ClusterName("outbound|50051||echo.default.svc.cluster.local".into())
        );
    }

    #[test]
    fn a_serialized_grpc_service_names_its_envoy_grpc_cluster() {
        // GrpcService { envoy_grpc { cluster_name: "echo" } }
        let inner = [&[0x0a, 4][..], b"echo"].concat();
        let outer = [&[0x0a, inner.len() as u8][..], &inner].concat();
        let echo = EnvoyGrpc {
            cluster_name: "echo".into(),
            ..EnvoyGrpc::default()
        };
        assert_eq!(service_ref(&outer), ServiceRef::Proto(echo.clone()));
        // … with authority "a" and skip_envoy_headers.
        let inner = [&inner[..], &[0x12, 1, b'a', 0x28, 1]].concat();
        let outer = [&[0x0a, inner.len() as u8][..], &inner].concat();
        assert_eq!(
            service_ref(&outer),
            ServiceRef::Proto(EnvoyGrpc {
                authority: Some("a".into()),
                skip_envoy_headers: true,
                ..echo
            })
        );
        // google_grpc (field 2) only.
        assert_eq!(service_ref(&[0x12, 0]), ServiceRef::GoogleGrpc);
        // The empty string, and names that happen to be well-formed protobuf (Envoy 1.40 aborts
        // on them: conformance_grpc.rs).
        for name in ["", "h2", "x1", "p1", "echo1"] {
            assert_eq!(service_ref(name.as_bytes()), ServiceRef::NoClient, "{name}");
        }
        // envoy_grpc whose inner message is malformed (an unterminated varint), or whose
        // cluster_name is not UTF-8: the whole parse fails, so the bytes are a cluster name.
        for raw in [&[0x0a, 0x01, 0xff][..], &[0x0a, 0x03, 0x0a, 0x01, 0xff]] {
            assert!(
                matches!(service_ref(raw), ServiceRef::ClusterName(_)),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn grpc_timeouts_are_written_in_milliseconds() {
        assert_eq!(grpc_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(grpc_timeout(Duration::ZERO), "0m");
    }

    #[test]
    fn messages_are_cut_from_their_frames() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&frame(b"ab"));
        b.extend_from_slice(&frame(b""));
        b.extend_from_slice(&frame(b"xyz")[..4]);
        assert_eq!(take_messages(&mut b), vec![b"ab".to_vec(), Vec::new()]);
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn grpc_message_is_percent_decoded() {
        assert_eq!(percent_decode(b"no%20such%3a thing"), "no such: thing");
        assert_eq!(percent_decode(b"100%"), "100%");
    }
}
