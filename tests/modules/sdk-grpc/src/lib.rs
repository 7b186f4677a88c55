//! Conformance module `sdk-grpc`, written as a Rust SDK user would (proxy-wasm 0.2): gRPC calls
//! and streams to the test server `tests/peers/grpc_echo.py` (service `meshward.test.Echo`), what
//! the host answered reported in request headers added before the request resumes (the upstream
//! echoes them), so one scenario file checks it in the harness and in Envoy alike. Callbacks that
//! arrive after the request resumed are listed in the response header `x-grpc-late`.
//!
//! Request headers:
//! - `x-grpc-call: <cluster>;<method>;<message>;<timeout ms>` (optional `x-grpc-meta: k=v,k=v`,
//!   `%XX` escapes allowed, as initial metadata) ⇒ `dispatch_grpc_call`; adds `x-grpc-token` (or
//!   `x-grpc-dispatch: error:<Status>` and continues) and pauses; the answer adds `x-grpc-status`,
//!   `x-grpc-status-message` (`get_grpc_status` in the callback, `<none>` without a message),
//!   `x-grpc-response` (the body, newlines as `;`, `<none>` when there is no buffer),
//!   `x-grpc-response-size` and `x-grpc-events`, then resumes. `x-grpc-raw: 1` dispatches with
//!   the raw `proxy_grpc_call` instead and reports its status as `x-grpc-dispatch: raw:<n>`
//!   (a token the SDK never learns: the request continues at once).
//! - `x-grpc-cancel: 1` (with `x-grpc-call`) ⇒ `cancel_grpc_call` right after dispatching, then a
//!   witness call (`Unary`, metadata `x-echo-sleep-ms: 300`) the request waits for:
//!   `x-grpc-events` shows whether the cancelled call's callback came (`response`) before the
//!   witness's (`witness`). `x-grpc-cancel: twice` cancels twice with the SDK (which panics on the
//!   second's NotFound).
//! - `x-grpc-stream: <cluster>;<method>;<m1|m2|…>;<end>` ⇒ `open_grpc_stream`, sends the messages
//!   (`<empty>` is an empty message) and then `<end>`: `close` (`end_stream` on the last message,
//!   or an empty `send_grpc_stream_message(None, true)` without messages), `close-call`
//!   (`close_grpc_stream` after the messages), `cancel` (`cancel_grpc_stream`, then a witness
//!   call as above) or `open` (nothing: the request resumes when as many messages came back as
//!   were sent). Reports `x-grpc-stream-token`, `x-grpc-events` (`initial`, `message`,
//!   `trailing`, `close` in order), `x-grpc-initial` / `x-grpc-trailing` (the callback's element count, `:`, then
//!   the `x-echo-*` pairs `k=v` joined by `,`), `x-grpc-initial-names` / `x-grpc-trailing-names`
//!   (every name, in order), `x-grpc-messages` (joined by `|`), `x-grpc-close:
//!   <status>:<get_grpc_status message>` and `x-grpc-status-seen` (`get_grpc_status` in each
//!   callback). `x-grpc-stream-then: send|close|cancel` makes that raw call on the token after
//!   `<end>`: `x-grpc-then-status: <n>`. `x-grpc-on-message: cancel|close` makes it in the first
//!   message callback: `x-grpc-on-message-status: <n>` (after a cancel the request resumes there,
//!   after a close at the close callback).
//! - `x-grpc-tokens: <grpc cluster>;<http cluster>;<op,op,…>` with ops `call` (Unary), `stream`
//!   (ServerStream `0`, half-closed) and `http` (`dispatch_http_call`) ⇒ `x-grpc-token-list`
//!   (each op's token, or `error:<Status>`), once every one of them answered.
//! - `x-grpc-bad-token: <n>` ⇒ `x-grpc-bad-token-status: send=<s>,close=<s>,cancel=<s>`, the raw
//!   statuses of `proxy_grpc_send`, `proxy_grpc_close` and `proxy_grpc_cancel` on that token, in
//!   that order; `<n>,<m>,…` ⇒ one `x-grpc-bad-token-<n>` each.

#[cfg(target_arch = "wasm32")]
mod filter;
