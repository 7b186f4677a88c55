//! Events delivered to a filter's root context — ticks, shared-queue notifications, HTTP call
//! responses — after which every stream they resumed is driven on.

use crate::vm::{call, VmSet};

impl VmSet {
    pub fn on_tick(&mut self, filter: usize) {
        let (root, f) = {
            let vm = &self.store.data().vms[filter];
            if vm.failed {
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
            if vm.failed {
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
            if vm.failed {
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
