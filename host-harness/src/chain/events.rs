//! Events delivered to a filter's contexts — ticks, shared-queue notifications, HTTP call
//! responses, gRPC answers — after which every stream they resumed is driven on.

use crate::envoy_model::grpc::{GrpcEvent, GrpcEventKind};
use crate::vm::{call, GrpcDelivery, VmSet};

impl VmSet {
    pub fn on_tick(&mut self, filter: usize) {
        let (root, f) = {
            let vm = &self.store.data().vms[filter];
            if vm.failed() {
                return;
            }
            (vm.root_ctx, vm.cb.tick.clone())
        };
        if let Some(f) = f {
            let _ = call(&mut self.store, filter, root, None, "proxy_on_tick", |st| {
                f.call(st, root as i32)
            });
        }
        self.drive_all();
    }

    pub fn on_queue_ready(&mut self, filter: usize, context_id: u32, token: u32) {
        let f = {
            let vm = &self.store.data().vms[filter];
            if vm.failed() {
                return;
            }
            vm.cb.queue_ready.clone()
        };
        if let Some(f) = f {
            let _ = call(
                &mut self.store,
                filter,
                context_id,
                None,
                "proxy_on_queue_ready",
                |st| f.call(st, (context_id as i32, token as i32)),
            );
        }
        self.drive_all();
    }

    pub fn on_callout(&mut self, filter: usize, token: u32) {
        let (root, f, result) = {
            let vm = &mut self.store.data_mut().vms[filter];
            let result = vm.callouts.remove(&token);
            if vm.failed() {
                return;
            }
            (vm.root_ctx, vm.cb.http_call_response.clone(), result)
        };
        let Some(result) = result else { return };
        let nh = result.headers.as_ref().map(|h| h.len()).unwrap_or(0) as i32;
        let body = result.body.len() as i32;
        let nt = result.trailers.len() as i32;
        self.store.data_mut().callout = Some(result);
        if let Some(f) = f {
            let _ = call(
                &mut self.store,
                filter,
                root,
                None,
                "proxy_on_http_call_response",
                |st| f.call(st, (root as i32, token as i32, nh, body, nt)),
            );
        }
        self.store.data_mut().callout = None;
        self.drive_all();
    }
}

impl VmSet {
    /// Delivers one gRPC answer to the VM's root context (cpp-host makes every callout there), as
    /// Envoy's handlers do: a message to `proxy_on_grpc_receive` (with `GrpcReceiveBuffer`),
    /// metadata to the metadata callbacks (with their maps), a close to `proxy_on_grpc_close`
    /// (with `proxy_get_status` telling its code and message). An answer for a cancelled exchange
    /// is dropped.
    pub fn on_grpc(&mut self, event: GrpcEvent) {
        let GrpcEvent { target, kind, last } = event;
        let (filter, ctx, token) = (target.filter, target.context, target.token);
        let shared = self.store.data().shared.clone();
        if last {
            shared.grpc.finished(&target);
        }
        let f = {
            let vm = &mut self.store.data_mut().vms[filter];
            let Some(op) = vm.grpc.get(&token).copied() else {
                return;
            };
            if vm.failed() {
                vm.grpc.remove(&token);
                return;
            }
            let cb = &vm.cb.grpc;
            let f = match &kind {
                GrpcEventKind::InitialMetadata(_) => cb.initial_metadata.clone(),
                GrpcEventKind::Message(_) => cb.receive.clone(),
                GrpcEventKind::TrailingMetadata(_) => cb.trailing_metadata.clone(),
                GrpcEventKind::Close { .. } => cb.close.clone(),
            };
            // Envoy's clean-up runs right after the callback; doing it first changes nothing the
            // module can see: a call ends with its answer or its close; a stream's entry goes
            // once both sides closed.
            match (&kind, op.stream) {
                (GrpcEventKind::Message(_) | GrpcEventKind::Close { .. }, false) => {
                    vm.grpc.remove(&token);
                }
                (GrpcEventKind::Close { .. }, true) if op.local_closed => {
                    vm.grpc.remove(&token);
                }
                (GrpcEventKind::Close { .. }, true) => {
                    if let Some(op) = vm.grpc.get_mut(&token) {
                        op.remote_closed = true;
                    }
                }
                _ => {}
            }
            if let GrpcEventKind::Close { status, .. } = &kind {
                // Envoy sets the status code only when the module has the callback.
                if f.is_some() {
                    vm.status_code = *status;
                }
            }
            f
        };
        let (name, arg) = {
            let st = self.store.data_mut();
            match kind {
                GrpcEventKind::InitialMetadata(pairs) => {
                    let n = pairs.len() as i32;
                    st.grpc.initial = Some(pairs);
                    ("proxy_on_grpc_receive_initial_metadata", n)
                }
                GrpcEventKind::Message(m) => {
                    let n = m.len() as i32;
                    st.grpc.message = Some(m);
                    ("proxy_on_grpc_receive", n)
                }
                GrpcEventKind::TrailingMetadata(pairs) => {
                    let n = pairs.len() as i32;
                    st.grpc.trailing = Some(pairs);
                    ("proxy_on_grpc_receive_trailing_metadata", n)
                }
                GrpcEventKind::Close { status, message } => {
                    st.status_message = Some(message);
                    ("proxy_on_grpc_close", status as i32)
                }
            }
        };
        if let Some(f) = f {
            let _ = call(&mut self.store, filter, ctx, None, name, |st| {
                f.call(st, (ctx as i32, token as i32, arg))
            });
        }
        {
            let st = self.store.data_mut();
            st.grpc = GrpcDelivery::default();
            st.status_message = None;
        }
        self.drive_all();
    }
}
