//! An in-flight request as one VM set holds it: Envoy's request and response as the filters see
//! them, where the chain driver is, and what the filters asked of it. Host calls change a stream
//! only through the methods here; the driver (`crate::chain`) reads the requests back with
//! [`Stream::take_reset`], [`Stream::take_local_reply`] and [`Stream::take_continue`].

use std::collections::{HashMap, VecDeque};

use meshward_abi::{BufferType, MapType, StreamType};

use crate::envoy_model::{
    echo, finalize_response_headers, is_grpc_request, local_reply, router_response_headers,
    router_upstream_headers, Connection, HeaderMap, StreamFacts,
};
use crate::outcome::{LogLine, Phase, RequestHead, Response, Verdict};
use crate::Status;

/// A local reply a filter asked for (`proxy_send_local_response`), or the host's own (503 for a
/// failed VM).
#[derive(Debug, Clone)]
pub(crate) struct LocalReply {
    pub status: u16,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Index of the filter that asked; `None` for the host.
    pub by: Option<usize>,
    /// The gRPC status the filter gave (0..=16; the SDKs' -1 "none" is `None`).
    pub grpc_status: Option<u32>,
}

/// What one filter's context may touch now. Envoy's wasm `Context` keeps a pointer to each
/// header map and body only while it stops iteration on it: it takes the pointer when the
/// phase's callback starts and drops it when the callback returns Continue, and
/// `proxy_continue_stream` (either direction) drops the request's three. A dropped map is
/// BadArgument to read or change (NotFound to read while access logging, when the access-log
/// copies are read instead); a dropped body reads as empty and is BadArgument to change.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    req_headers: bool,
    req_body: bool,
    req_trailers: bool,
    resp_headers: bool,
    resp_body: bool,
}

/// Where a stream is: which callbacks the chain runs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    ReqHeaders,
    ReqBody,
    ReqTrailers,
    Upstream,
    RespHeaders,
    RespBody,
    Finish,
    Done,
}

impl Stage {
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Stage::ReqHeaders | Stage::ReqBody | Stage::ReqTrailers
        )
    }

    /// Encoding (a reply sent now replaces the response instead of re-entering the filters).
    pub fn is_response(self) -> bool {
        matches!(self, Stage::RespHeaders | Stage::RespBody | Stage::Finish)
    }

    pub fn phase(self) -> Phase {
        match self {
            Stage::ReqHeaders | Stage::Upstream => Phase::RequestHeaders,
            Stage::ReqBody => Phase::RequestBody,
            Stage::ReqTrailers => Phase::RequestTrailers,
            Stage::RespHeaders => Phase::ResponseHeaders,
            Stage::RespBody => Phase::ResponseBody,
            Stage::Finish => Phase::Log,
            Stage::Done => Phase::Done,
        }
    }
}

/// What filters asked of the stream from a host call, for the driver to carry out.
#[derive(Default)]
struct Requests {
    continue_: bool,
    reset_by: Option<usize>,
    local_reply: Option<LocalReply>,
}

/// An in-flight request.
pub(crate) struct Stream {
    req_headers: HeaderMap,
    req_body: Vec<u8>,
    req_trailers: Option<HeaderMap>,
    resp_headers: Option<HeaderMap>,
    resp_body: Vec<u8>,
    resp_trailers: Option<HeaderMap>,
    /// Envoy filter state set through `proxy_set_property` (key = the raw path bytes).
    filter_state: HashMap<Vec<u8>, Vec<u8>>,
    conn: Connection,
    start_ns: u64,
    stage: Stage,
    /// Position in the stage's filter order.
    pos: usize,
    /// Each filter's context id for this stream (`None`: it never saw the request).
    ctx: Vec<Option<u32>>,
    paused: bool,
    requests: Requests,
    /// Filters that already failed this stream with 503 (Envoy fails a stream once).
    stream_failed: Vec<bool>,
    /// Per filter: the maps and bodies its context holds now.
    held: Vec<Held>,
    /// The filter whose host call reads the stream's attributes (`proxy_get_property`).
    viewer: Option<usize>,
    /// Body chunks still to reach the filter at `pos` in a body stage (each its own callback,
    /// the last one with `end_of_stream`), and the chunks it passed on.
    chunks_in: VecDeque<Vec<u8>>,
    chunks_out: Vec<Vec<u8>>,
    /// The filter at `pos` stopped with StopIterationAndBuffer: the next chunk is added to the
    /// buffer it sees instead of replacing it.
    buffering: bool,
    /// `end_of_stream` of the body callback running now.
    chunk_eos: bool,
    /// The first filter that stopped iteration on the request headers: the request body
    /// arrives while it is stopped, so Envoy hands it and every filter behind it the whole body
    /// as one chunk with end_of_stream when it continues.
    headers_stopped_at: Option<usize>,
    /// The response body came from the upstream's HTTP/1 codec (data, then an empty
    /// end-of-stream chunk), not from a local reply (one chunk with end_of_stream).
    resp_from_codec: bool,
    in_access_log: bool,
    upstream_request: Option<RequestHead>,
    verdict: Option<Verdict>,
    logs: Vec<LogLine>,
    filter_nanos: Vec<u64>,
    /// Per filter: `env.proxy_*` calls its callbacks made for this stream.
    filter_hostcalls: Vec<u64>,
    /// Per filter: wasm instructions its callbacks executed for this stream (0 unmetered).
    filter_fuel: Vec<u64>,
}

impl Stream {
    /// A request for a chain of `filters` filters, before any callback ran. `_trailers` are
    /// dropped: Envoy's HTTP/1 codec discards a chunked request's trailers unless
    /// `http_protocol_options.enable_trailers` is set, which it is not by default (the
    /// trailers stage stays for a listener that keeps them).
    pub fn new(
        filters: usize,
        conn: Connection,
        req_headers: HeaderMap,
        body: Vec<u8>,
        _trailers: Option<HeaderMap>,
        start_ns: u64,
    ) -> Self {
        Stream {
            req_headers,
            req_body: body,
            req_trailers: None,
            resp_headers: None,
            resp_body: Vec::new(),
            resp_trailers: None,
            filter_state: HashMap::new(),
            conn,
            start_ns,
            stage: Stage::ReqHeaders,
            pos: 0,
            ctx: vec![None; filters],
            paused: false,
            requests: Requests::default(),
            stream_failed: vec![false; filters],
            held: vec![Held::default(); filters],
            viewer: None,
            chunks_in: VecDeque::new(),
            chunks_out: Vec::new(),
            buffering: false,
            chunk_eos: false,
            resp_from_codec: false,
            headers_stopped_at: None,
            in_access_log: false,
            upstream_request: None,
            verdict: None,
            logs: Vec::new(),
            filter_nanos: vec![0; filters],
            filter_hostcalls: vec![0; filters],
            filter_fuel: vec![0; filters],
        }
    }

    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    // What host calls ask of the stream.

    /// `proxy_continue_stream` by filter `by`: resumes the direction the stream is paused in (a
    /// request `kind` while decoding, a response `kind` while encoding); otherwise nothing. In
    /// either direction the filter lets go of the request's headers, body and trailers (Envoy's
    /// `Context::continueStream`; it keeps the response's).
    pub fn continue_stream(&mut self, kind: StreamType, by: usize) {
        if matches!(kind, StreamType::HttpRequest | StreamType::HttpResponse) {
            if let Some(h) = self.held.get_mut(by) {
                h.req_headers = false;
                h.req_body = false;
                h.req_trailers = false;
            }
        }
        let applies = match kind {
            StreamType::HttpRequest => self.stage.is_request(),
            StreamType::HttpResponse => {
                matches!(self.stage, Stage::RespHeaders | Stage::RespBody)
            }
            StreamType::Downstream | StreamType::Upstream => false,
        };
        if applies {
            self.requests.continue_ = true;
        }
    }

    /// `proxy_close_stream` by filter `by`: Envoy resets the stream.
    pub fn close(&mut self, by: usize) {
        self.requests.reset_by = Some(by);
    }

    /// `proxy_send_local_response`: the first reply asked for wins.
    /// Whether the response headers have gone to the client: the response body is flowing and
    /// no filter still holds the headers (every filter continued them).
    pub fn response_headers_sent(&self) -> bool {
        self.stage == Stage::RespBody && !self.held.iter().any(|h| h.resp_headers)
    }

    pub fn send_local_reply(&mut self, reply: LocalReply) {
        if self.requests.local_reply.is_none() {
            self.requests.local_reply = Some(reply);
        }
    }

    /// `proxy_set_property` on a stream: Envoy filter state.
    pub fn set_filter_state(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.filter_state.insert(key, value);
    }

    /// The status Envoy answers for reading a map it has no pointer to: NotFound during
    /// access logging, BadArgument otherwise.
    pub fn missing_map_status(&self) -> Status {
        if self.in_access_log {
            Status::NOT_FOUND
        } else {
            Status::BAD_ARGUMENT
        }
    }

    /// The header map `kind` as filter `filter` may read it now (Envoy `getConstMap`): while
    /// access logging the access-log copies (request headers, response headers and trailers;
    /// never the request trailers), otherwise the maps it holds.
    pub fn read_map(&self, kind: MapType, filter: usize) -> Option<&HeaderMap> {
        let held = self.held.get(filter).copied().unwrap_or_default();
        let log = self.in_access_log;
        match kind {
            MapType::HttpRequestHeaders if log || held.req_headers => Some(&self.req_headers),
            MapType::HttpRequestTrailers if !log && held.req_trailers => self.req_trailers.as_ref(),
            MapType::HttpResponseHeaders if log || held.resp_headers => self.resp_headers.as_ref(),
            MapType::HttpResponseTrailers if log => self.resp_trailers.as_ref(),
            _ => None,
        }
    }

    /// The header map `kind` as filter `filter` may change it now (Envoy `getMap`: only the maps
    /// it holds, also while access logging).
    pub fn write_map(&mut self, kind: MapType, filter: usize) -> Option<&mut HeaderMap> {
        let held = self.held.get(filter).copied().unwrap_or_default();
        match kind {
            MapType::HttpRequestHeaders if held.req_headers => Some(&mut self.req_headers),
            MapType::HttpRequestTrailers if held.req_trailers => self.req_trailers.as_mut(),
            MapType::HttpResponseHeaders if held.resp_headers => self.resp_headers.as_mut(),
            _ => None,
        }
    }

    /// The body `kind` as filter `filter` may read it now: the chunk (or the buffered chunks) of
    /// its body callback while it holds it, else empty (Envoy answers Ok with no bytes).
    pub fn body(&self, kind: BufferType, filter: usize) -> &[u8] {
        let held = self.held.get(filter).copied().unwrap_or_default();
        match kind {
            BufferType::HttpRequestBody if held.req_body => &self.req_body,
            BufferType::HttpResponseBody if held.resp_body => &self.resp_body,
            _ => &[],
        }
    }

    /// The body `kind` to change (`proxy_set_buffer_bytes`): only one filter `filter` holds.
    pub fn body_mut(&mut self, kind: BufferType, filter: usize) -> Option<&mut Vec<u8>> {
        let held = self.held.get(filter).copied().unwrap_or_default();
        match kind {
            BufferType::HttpRequestBody if held.req_body => Some(&mut self.req_body),
            BufferType::HttpResponseBody if held.resp_body => Some(&mut self.resp_body),
            _ => None,
        }
    }

    /// The filter whose property reads follow (set by `proxy_get_property` before it reads).
    pub fn set_viewer(&mut self, filter: usize) {
        self.viewer = Some(filter);
    }

    pub fn log(&mut self, line: LogLine) {
        self.logs.push(line);
    }

    /// Time spent in filter `filter`'s callbacks for this stream.
    pub fn add_filter_nanos(&mut self, filter: usize, nanos: u64) {
        if let Some(n) = self.filter_nanos.get_mut(filter) {
            *n += nanos;
        }
    }

    pub fn add_filter_hostcalls(&mut self, filter: usize, calls: u64) {
        if let Some(n) = self.filter_hostcalls.get_mut(filter) {
            *n += calls;
        }
    }

    pub fn add_filter_fuel(&mut self, filter: usize, fuel: u64) {
        if let Some(n) = self.filter_fuel.get_mut(filter) {
            *n += fuel;
        }
    }

    // What the driver reads back and does (`crate::chain`).

    /// A paused stream a host call asked something of (from another context: a callout
    /// response, a tick, a queue): the driver must look at it again.
    pub fn needs_driving(&self) -> bool {
        self.paused
            && (self.requests.continue_
                || self.requests.reset_by.is_some()
                || self.requests.local_reply.is_some())
    }

    /// Whether a reply or a reset is pending (they end iteration, as cpp-host's
    /// `stopNextIteration`).
    pub fn is_answered(&self) -> bool {
        self.requests.reset_by.is_some() || self.requests.local_reply.is_some()
    }

    /// The filter that asked for a reset, once.
    pub fn take_reset(&mut self) -> Option<usize> {
        self.requests.reset_by.take()
    }

    /// The local reply asked for, once.
    pub fn take_local_reply(&mut self) -> Option<LocalReply> {
        self.requests.local_reply.take()
    }

    fn take_continue(&mut self) -> bool {
        std::mem::take(&mut self.requests.continue_)
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Filter `filter`'s context for this stream, once it was created.
    pub fn context(&self, filter: usize) -> Option<u32> {
        self.ctx.get(filter).copied().flatten()
    }

    pub fn set_context(&mut self, filter: usize, ctx: u32) {
        if let Some(slot) = self.ctx.get_mut(filter) {
            *slot = Some(ctx);
        }
    }

    /// The filter the stream is at in its stage — request stages visit every filter in chain
    /// order, response stages the filters that saw the request in reverse order — or `None`
    /// when the stage is through.
    pub fn current_filter(&self) -> Option<usize> {
        let n = self.ctx.len();
        match self.stage {
            Stage::RespHeaders | Stage::RespBody => (0..n)
                .rev()
                .filter(|i| self.ctx[*i].is_some())
                .nth(self.pos),
            _ => (self.pos < n).then_some(self.pos),
        }
    }

    /// Filter `filter`'s callback for the stage is about to run: its context takes hold of the
    /// stage's map or body; in a body stage the next chunk arrives (added to what the filter
    /// buffered, or replacing what it passed on).
    pub fn begin_call(&mut self, filter: usize) {
        let is_body = matches!(self.stage, Stage::ReqBody | Stage::RespBody);
        if is_body {
            let chunk = self.chunks_in.pop_front().unwrap_or_default();
            self.chunk_eos = self.chunks_in.is_empty();
            let buffering = self.buffering;
            let buf = self.stage_body();
            if buffering {
                buf.extend_from_slice(&chunk);
            } else {
                *buf = chunk;
            }
        }
        let Some(h) = self.held.get_mut(filter) else {
            return;
        };
        match self.stage {
            Stage::ReqHeaders => h.req_headers = true,
            Stage::ReqBody => h.req_body = true,
            Stage::ReqTrailers => h.req_trailers = true,
            Stage::RespHeaders => h.resp_headers = true,
            Stage::RespBody => h.resp_body = true,
            Stage::Upstream | Stage::Finish | Stage::Done => {}
        }
    }

    /// The body a body stage works on.
    fn stage_body(&mut self) -> &mut Vec<u8> {
        if self.stage == Stage::RespBody {
            &mut self.resp_body
        } else {
            &mut self.req_body
        }
    }

    /// Filter `filter`'s callback returned Continue: it lets go of the stage's map or body, and
    /// the stream moves on.
    pub fn advance(&mut self, filter: usize) {
        if let Some(h) = self.held.get_mut(filter) {
            match self.stage {
                Stage::ReqHeaders => h.req_headers = false,
                Stage::ReqBody => h.req_body = false,
                Stage::ReqTrailers => h.req_trailers = false,
                Stage::RespHeaders => h.resp_headers = false,
                Stage::RespBody => h.resp_body = false,
                Stage::Upstream | Stage::Finish | Stage::Done => {}
            }
        }
        self.pass_on();
    }

    /// The filter at `pos` is through with what it had: in a body stage its buffer goes on to
    /// the next filter as one chunk, and it gets its next chunk if one is left; otherwise the
    /// next filter's turn.
    fn pass_on(&mut self) {
        if matches!(self.stage, Stage::ReqBody | Stage::RespBody) {
            self.buffering = false;
            let out = std::mem::take(self.stage_body());
            self.chunks_out.push(out);
            if !self.chunks_in.is_empty() {
                return;
            }
            // Envoy hands each chunk on as it was passed; the next filter gets them one by one.
            self.chunks_in = std::mem::take(&mut self.chunks_out).into();
        }
        self.pos += 1;
        self.coalesce_if_stopped();
    }

    /// From the filter that stopped on the request headers on, the request body is one chunk.
    fn coalesce_if_stopped(&mut self) {
        let stopped = self.headers_stopped_at.is_some_and(|at| self.pos >= at);
        if self.stage == Stage::ReqBody && stopped && self.chunks_in.len() > 1 {
            let body: Vec<u8> = std::mem::take(&mut self.chunks_in)
                .into_iter()
                .flatten()
                .collect();
            self.chunks_in = [body].into();
        }
    }

    /// On to the next stage with something to do (a body only when there is one, trailers only
    /// when there are some). A body stage ends with the chunks the last filter passed on put
    /// together: what the upstream (or the client) receives.
    pub fn enter_next_stage(&mut self) {
        if matches!(self.stage, Stage::ReqBody | Stage::RespBody) {
            let body = std::mem::take(&mut self.chunks_in)
                .into_iter()
                .flatten()
                .collect();
            *self.stage_body() = body;
            self.chunks_out.clear();
            self.buffering = false;
        }
        self.stage = match self.stage {
            Stage::ReqHeaders if !self.req_body.is_empty() => Stage::ReqBody,
            Stage::ReqHeaders | Stage::ReqBody if self.req_trailers.is_some() => Stage::ReqTrailers,
            Stage::ReqHeaders | Stage::ReqBody | Stage::ReqTrailers => Stage::Upstream,
            Stage::RespHeaders if !self.resp_body.is_empty() => Stage::RespBody,
            _ => Stage::Finish,
        };
        self.pos = 0;
        match self.stage {
            // Envoy's HTTP/1 codec dispatches the body it read, then an empty chunk with
            // end_of_stream when the message is complete (observed in Envoy 1.40:
            // tests/scenarios/conformance/http/bodies.yaml).
            Stage::ReqBody => {
                self.chunks_in = [std::mem::take(&mut self.req_body), Vec::new()].into();
                self.coalesce_if_stopped();
            }
            Stage::RespBody if self.resp_from_codec => {
                self.chunks_in = [std::mem::take(&mut self.resp_body), Vec::new()].into();
            }
            // A local reply's body is encoded in one call with end_of_stream.
            Stage::RespBody => {
                self.chunks_in = [std::mem::take(&mut self.resp_body)].into();
            }
            _ => {}
        }
    }

    /// The two numbers a stage's callback gets after the context id: headers or trailers count
    /// or body size, then `end_of_stream` (the trailers callback takes only the first).
    pub fn callback_args(&self) -> (i32, i32) {
        let count = |m: &Option<HeaderMap>| m.as_ref().map(|m| m.len()).unwrap_or(0) as i32;
        match self.stage {
            Stage::ReqHeaders => (
                self.req_headers.len() as i32,
                (self.req_body.is_empty() && self.req_trailers.is_none()) as i32,
            ),
            Stage::ReqBody => (
                self.req_body.len() as i32,
                (self.chunk_eos && self.req_trailers.is_none()) as i32,
            ),
            Stage::ReqTrailers => (count(&self.req_trailers), 0),
            Stage::RespHeaders => (count(&self.resp_headers), self.resp_body.is_empty() as i32),
            Stage::RespBody => (self.resp_body.len() as i32, self.chunk_eos as i32),
            Stage::Upstream | Stage::Finish | Stage::Done => (0, 0),
        }
    }

    /// A paused stream that a filter continued goes on; `false` while it stays paused.
    pub fn resume(&mut self) -> bool {
        if !self.paused {
            return true;
        }
        if !self.take_continue() {
            return false;
        }
        self.paused = false;
        self.pass_on();
        true
    }

    /// After a callback paused (or answered): `false` when the driver must stop here until a
    /// host call resumes the stream. A body callback that stops before the last chunk buffers
    /// (StopIterationAndBuffer): it is called again with the next chunk added.
    pub fn settle_pause(&mut self) -> bool {
        if self.is_answered() {
            self.paused = true;
            return true;
        }
        if self.take_continue() {
            // continue_stream during the very callback that paused.
            self.pass_on();
            return true;
        }
        if matches!(self.stage, Stage::ReqBody | Stage::RespBody) && !self.chunk_eos {
            self.buffering = true;
            return true;
        }
        if self.stage == Stage::ReqHeaders && self.headers_stopped_at.is_none() {
            self.headers_stopped_at = Some(self.pos);
        }
        self.paused = true;
        false
    }

    /// `proxy_close_stream` carried out: Envoy resets the stream; the client gets no response.
    pub fn reset(&mut self, by: Option<String>) {
        self.paused = false;
        self.verdict = Some(Verdict::LocalReply {
            status: 0,
            details: "wasm_close_stream".to_string(),
            by,
        });
        self.resp_headers = None;
        self.stage = Stage::Finish;
    }

    /// A local reply carried out (filter `by` asked for it): it becomes the response. Sent while
    /// decoding, it runs through the response callbacks; sent while encoding, it replaces the
    /// response without re-entering the filters.
    pub fn answer_locally(&mut self, reply: LocalReply, by: Option<String>) {
        self.paused = false;
        let in_response = self.stage.is_response();
        self.chunks_in.clear();
        self.chunks_out.clear();
        self.buffering = false;
        self.resp_from_codec = false;
        let (headers, body) = local_reply(
            reply.status,
            reply.body,
            &reply.headers,
            is_grpc_request(&self.req_headers),
            reply.grpc_status,
        );
        self.resp_headers = Some(headers);
        self.resp_body = body;
        self.verdict = Some(Verdict::LocalReply {
            status: reply.status,
            details: reply.details,
            by,
        });
        self.stage = if in_response {
            Stage::Finish
        } else {
            Stage::RespHeaders
        };
        self.pos = 0;
    }

    /// The router sends the request to the echo upstream, whose answer becomes the response.
    pub fn reach_upstream(&mut self) {
        router_upstream_headers(&mut self.req_headers);
        self.upstream_request = Some(RequestHead {
            headers: self.req_headers.to_strings(),
            body: self.req_body.clone(),
        });
        let (mut headers, body) = echo(&self.req_headers, &self.req_body);
        router_response_headers(&mut headers);
        self.resp_headers = Some(headers);
        self.resp_body = body;
        self.resp_from_codec = true;
        self.verdict = Some(Verdict::Upstream { status: 200 });
        self.stage = Stage::RespHeaders;
        self.pos = 0;
    }

    /// Filter `filter`'s VM has failed and the plugin fails closed: the 503 Envoy answers
    /// (`wasm_fail_stream`), once per filter and stream, and never over a local reply that is
    /// already being encoded.
    pub fn fail(&mut self, filter: usize) -> Option<LocalReply> {
        let answering =
            matches!(self.verdict, Some(Verdict::LocalReply { .. })) && self.stage.is_response();
        if self.stream_failed.get(filter).copied().unwrap_or(true) || answering {
            return None;
        }
        if let Some(failed) = self.stream_failed.get_mut(filter) {
            *failed = true;
        }
        self.requests.local_reply = None;
        Some(LocalReply {
            status: 503,
            details: "wasm_fail_stream".to_string(),
            body: Vec::new(),
            headers: Vec::new(),
            by: Some(filter),
            grpc_status: Some(14),
        })
    }

    /// Access logging begins: every filter in chain order, with its context if it has one.
    pub fn begin_access_log(&mut self) -> Vec<(usize, Option<u32>)> {
        self.in_access_log = true;
        self.ctx.iter().copied().enumerate().collect()
    }

    /// The stream is over: HCM's last touches to the response headers.
    pub fn complete(&mut self) {
        self.stage = Stage::Done;
        self.paused = false;
        if let Some(h) = self.resp_headers.as_mut() {
            finalize_response_headers(h, self.resp_body.len());
        }
    }

    /// Nothing can resume the paused stream: it goes to access logging; the phase it was
    /// stuck in.
    pub fn give_up(&mut self) -> Phase {
        let phase = self.stage.phase();
        self.stage = Stage::Finish;
        self.paused = false;
        phase
    }

    // The result.

    /// The client-visible response (`None` headers: nothing was answered).
    fn response(&mut self) -> Response {
        let Some(h) = self.resp_headers.as_ref() else {
            return Response::default();
        };
        let status = h
            .get_str(":status")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Response {
            status,
            headers: h
                .to_strings()
                .into_iter()
                .filter(|(n, _)| n != ":status")
                .collect(),
            body: std::mem::take(&mut self.resp_body),
        }
    }

    /// The finished stream's parts, moved out: verdict, what the upstream saw, the response
    /// (empty when `stalled`), log lines, and nanoseconds per filter.
    pub fn into_result(mut self, stalled: bool) -> StreamResult {
        StreamResult {
            pos: self.pos,
            verdict: self.verdict.take(),
            upstream_request: self.upstream_request.take(),
            response: if stalled {
                Response::default()
            } else {
                self.response()
            },
            logs: std::mem::take(&mut self.logs),
            filter_nanos: std::mem::take(&mut self.filter_nanos),
            filter_hostcalls: std::mem::take(&mut self.filter_hostcalls),
            filter_fuel: std::mem::take(&mut self.filter_fuel),
        }
    }
}

/// A finished (or abandoned) stream, taken apart for the outcome.
pub(crate) struct StreamResult {
    /// Position of the filter it stopped at.
    pub pos: usize,
    pub verdict: Option<Verdict>,
    pub upstream_request: Option<RequestHead>,
    pub response: Response,
    pub logs: Vec<LogLine>,
    pub filter_nanos: Vec<u64>,
    pub filter_hostcalls: Vec<u64>,
    pub filter_fuel: Vec<u64>,
}

impl StreamFacts for Stream {
    fn connection(&self) -> &Connection {
        &self.conn
    }
    /// The request headers as the filter reading properties holds them (Envoy reads the
    /// `request.*` header attributes from the context's own pointer, or the access-log copy).
    fn request_headers(&self) -> Option<&HeaderMap> {
        let viewer = self.viewer?;
        self.read_map(MapType::HttpRequestHeaders, viewer)
    }
    fn request_body_len(&self) -> usize {
        self.req_body.len()
    }
    fn start_ns(&self) -> u64 {
        self.start_ns
    }
    fn response_headers(&self) -> Option<&HeaderMap> {
        self.resp_headers.as_ref()
    }
    fn response_body_len(&self) -> usize {
        self.resp_body.len()
    }
    fn response_body_received(&self) -> usize {
        // The whole body is here already, but Envoy has received none of it while it decodes
        // the response headers.
        if self.stage == Stage::RespHeaders {
            0
        } else {
            self.resp_body.len()
        }
    }
    fn code_details(&self) -> Option<&str> {
        match &self.verdict {
            Some(Verdict::LocalReply { details, .. }) => Some(details),
            Some(_) => Some("via_upstream"),
            None => None,
        }
    }
    fn filter_state(&self, key: &[u8]) -> Option<&[u8]> {
        self.filter_state.get(key).map(Vec::as_slice)
    }
}
