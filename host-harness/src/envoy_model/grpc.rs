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

use crate::runtime::{lock, Thread};

/// Name/value pairs as the module reads them from a metadata map.
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// gRPC status codes the model produces itself.
const UNKNOWN: u32 = 2;
const DEADLINE_EXCEEDED: u32 = 4;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;

/// What the first argument of `proxy_grpc_call` / `proxy_grpc_stream` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServiceRef {
    /// A serialized `envoy.config.core.v3.GrpcService` with `envoy_grpc.cluster_name` (Envoy
    /// then skips its cluster check: an unknown cluster fails the call later, not the dispatch).
    Proto(String),
    /// A serialized `GrpcService` for Google's C++ gRPC client (`google_grpc`): not modelled.
    GoogleGrpc,
    /// A serialized `GrpcService` naming no client (the empty string parses as one): Envoy cannot
    /// make a client for it (BadArgument).
    NoClient,
    /// Bytes that do not parse as a `GrpcService`: Envoy takes them as a cluster name.
    ClusterName(String),
}

/// How Envoy 1.40 reads the service argument: `GrpcService::ParseFromString`, and when that
/// fails, the bytes as a cluster name. (A minimal protobuf wire walk rather than a protobuf crate:
/// only "does it parse" and two string fields are needed.)
pub(crate) fn service_ref(bytes: &[u8]) -> ServiceRef {
    match parse_message(bytes) {
        Some(fields) => {
            let envoy_grpc = fields.iter().find(|(n, _)| *n == 1).map(|(_, v)| v);
            match envoy_grpc.and_then(|v| parse_message(v)) {
                Some(inner) => {
                    let name = inner
                        .iter()
                        .filter(|(n, _)| *n == 1)
                        .next_back()
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default();
                    ServiceRef::Proto(name)
                }
                None if fields.iter().any(|(n, _)| *n == 2) => ServiceRef::GoogleGrpc,
                None => ServiceRef::NoClient,
            }
        }
        None => ServiceRef::ClusterName(String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// The length-delimited fields of a protobuf message (field number, bytes), or `None` when the
/// bytes are not a well-formed message (what makes `ParseFromString` fail).
fn parse_message(mut b: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    let mut groups: Vec<u64> = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return None;
        }
        match wire {
            0 => {
                varint(&mut b)?;
            }
            1 => b = b.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                let value = b.get(..len)?;
                b = b.get(len..)?;
                if groups.is_empty() {
                    out.push((field, value));
                }
            }
            3 => groups.push(field),
            4 => {
                if groups.pop() != Some(field) {
                    return None;
                }
            }
            5 => b = b.get(4..)?,
            _ => return None,
        }
    }
    groups.is_empty().then_some(out)
}

/// Who gets an exchange's callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct GrpcTarget {
    pub thread: Thread,
    pub filter: usize,
    /// The context that made the call (Envoy's handler keeps it; callbacks carry its id).
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
    /// `:authority`: the cluster name, as Envoy's client sends it.
    pub authority: String,
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
}

impl Default for GrpcClient {
    fn default() -> Self {
        let (sender, inbox) = mpsc::channel();
        GrpcClient {
            runtime: OnceLock::new(),
            live: Mutex::new(HashMap::new()),
            sender: Mutex::new(sender),
            inbox: Mutex::new(inbox),
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
    }

    /// Cancels a call or resets a stream: no more callbacks for it.
    pub fn cancel(&self, target: GrpcTarget) {
        if let Some(l) = lock(&self.live).remove(&target) {
            if let Some(a) = l.abort {
                a.abort();
            }
        }
    }

    /// Cancels every exchange a context made (Envoy's `~Context`: a stream's context goes away
    /// with its request).
    pub fn cancel_context(&self, thread: Thread, filter: usize, context: u32) {
        let mut live = lock(&self.live);
        live.retain(|t, l| {
            let mine = t.thread == thread && t.filter == filter && t.context == context;
            if mine {
                if let Some(a) = &l.abort {
                    a.abort();
                }
            }
            !mine
        });
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
    loop {
        let Some(header) = buf.get(..5) else { break };
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        buf.advance(5);
        out.push(buf.split_to(len).to_vec());
    }
    out
}

/// Envoy's message for a transport failure before the server answered.
const CONNECT_FAILURE: &str = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused";

/// One call or stream, start to end; every event it produces goes to `events`.
async fn exchange(
    request: GrpcRequest,
    commands: Option<tokio::sync::mpsc::UnboundedReceiver<StreamCommand>>,
    events: mpsc::Sender<GrpcEvent>,
) {
    let target = request.target;
    let deadline = request.unary.as_ref().and_then(|(_, d)| *d);
    let emit = |kind: GrpcEventKind, last: bool| {
        let _ = events.send(GrpcEvent { target, kind, last });
    };
    let run = run_exchange(request, commands, &emit);
    let outcome = match deadline {
        Some(d) => match tokio::time::timeout(d, run).await {
            Ok(o) => o,
            Err(_) => Err((DEADLINE_EXCEEDED, "upstream request timeout".to_string())),
        },
        None => run.await,
    };
    if let Err((status, message)) = outcome {
        emit(GrpcEventKind::Close { status, message }, true);
    }
}

type Failure = (u32, String);

async fn run_exchange(
    request: GrpcRequest,
    mut commands: Option<tokio::sync::mpsc::UnboundedReceiver<StreamCommand>>,
    emit: &impl Fn(GrpcEventKind, bool),
) -> Result<(), Failure> {
    let unavailable = |m: &str| (UNAVAILABLE, m.to_string());
    let tcp = tokio::net::TcpStream::connect(request.address)
        .await
        .map_err(|_| unavailable(CONNECT_FAILURE))?;
    let (client, connection) = h2::client::handshake(tcp)
        .await
        .map_err(|_| unavailable(CONNECT_FAILURE))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client
        .ready()
        .await
        .map_err(|_| unavailable(CONNECT_FAILURE))?;
    let uri = format!(
        "http://{}/{}/{}",
        request.authority, request.service, request.method
    );
    let mut builder = http::Request::builder().method("POST").uri(uri);
    builder = builder
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some((_, Some(d))) = &request.unary {
        builder = builder.header("grpc-timeout", grpc_timeout(*d));
    }
    for (n, v) in &request.metadata {
        builder = builder.header(n.as_slice(), v.as_slice());
    }
    let head = builder.body(()).map_err(|e| {
        (
            INTERNAL,
            format!("harness: the gRPC request is invalid: {e}"),
        )
    })?;
    let (response, mut send) = client
        .send_request(head, false)
        .map_err(|_| unavailable(CONNECT_FAILURE))?;
    if let Some((message, _)) = &request.unary {
        let _ = send.send_data(frame(message), true);
    }
    let unary = request.unary.is_some();
    // Stream commands flow while the answer is awaited.
    let sender = async {
        if let Some(rx) = commands.as_mut() {
            while let Some(c) = rx.recv().await {
                match c {
                    StreamCommand::Send(m, end) => {
                        let _ = send.send_data(frame(&m), end);
                    }
                    StreamCommand::HalfClose => {
                        let _ = send.send_data(Bytes::new(), true);
                    }
                }
            }
        }
        std::future::pending::<()>().await
    };
    let receiver = receive(response, unary, emit);
    tokio::select! {
        r = receiver => r,
        _ = sender => Ok(()),
    }
}

/// Reads the answer: initial metadata, messages, trailers, as Envoy's client reports them.
async fn receive(
    response: h2::client::ResponseFuture,
    unary: bool,
    emit: &impl Fn(GrpcEventKind, bool),
) -> Result<(), Failure> {
    let reset = |e: h2::Error| {
        (
            UNAVAILABLE,
            format!("upstream connect error or disconnect/reset before headers. reset reason: {e}"),
        )
    };
    let response = response.await.map_err(reset)?;
    let (parts, mut body) = response.into_parts();
    let http_status = parts.status.as_u16();
    let trailers_only = body.is_end_stream();
    if http_status != 200 {
        let (status, message) =
            status_of(&parts.headers).unwrap_or((http_to_grpc(http_status), String::new()));
        return Err((status, message));
    }
    if trailers_only {
        let (status, message) = status_of(&parts.headers).unwrap_or((UNKNOWN, String::new()));
        if !unary {
            emit(
                GrpcEventKind::TrailingMetadata(pairs_of(&parts.headers)),
                false,
            );
        }
        if unary && status == 0 {
            return Err((INTERNAL, String::new()));
        }
        emit(GrpcEventKind::Close { status, message }, true);
        return Ok(());
    }
    if !unary {
        emit(
            GrpcEventKind::InitialMetadata(pairs_of(&parts.headers)),
            false,
        );
    }
    let mut buf = BytesMut::new();
    let mut answer: Option<Vec<u8>> = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(reset)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        for m in take_messages(&mut buf) {
            if unary {
                answer.get_or_insert(m);
            } else {
                emit(GrpcEventKind::Message(m), false);
            }
        }
    }
    let trailers = body.trailers().await.map_err(reset)?.unwrap_or_default();
    let (status, message) = status_of(&trailers).unwrap_or((UNKNOWN, String::new()));
    if unary {
        return match (status, answer) {
            (0, Some(m)) => {
                emit(GrpcEventKind::Message(m), true);
                Ok(())
            }
            (0, None) => Err((INTERNAL, String::new())),
            (s, _) => Err((s, message)),
        };
    }
    emit(GrpcEventKind::TrailingMetadata(pairs_of(&trailers)), false);
    emit(GrpcEventKind::Close { status, message }, true);
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
        assert_eq!(service_ref(&outer), ServiceRef::Proto("echo".into()));
        // google_grpc (field 2) only.
        assert_eq!(service_ref(&[0x12, 0]), ServiceRef::GoogleGrpc);
        // The empty string parses as an empty message.
        assert_eq!(service_ref(b""), ServiceRef::NoClient);
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
