//! Shared queues (`proxy_register_shared_queue` and friends), per vm_id, with
//! proxy-wasm-cpp-host's semantics.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::lock;
use super::Thread;
use crate::Status;

/// Where a queue's `on_queue_ready` goes: the last registrant's root context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueOwner {
    pub thread: Thread,
    pub filter: usize,
    pub context_id: u32,
}

#[derive(Default)]
pub(crate) struct SharedQueues {
    inner: Mutex<QueuesInner>,
}

#[derive(Default)]
struct QueuesInner {
    next_token: u32,
    tokens: HashMap<(String, Vec<u8>), u32>,
    queues: HashMap<u32, (QueueOwner, VecDeque<Vec<u8>>)>,
}

impl SharedQueues {
    /// cpp-host `registerQueue`: same token for the same (vm_id, name); the last registrant
    /// receives `on_queue_ready`; queued data is kept.
    pub fn register(&self, vm_id: &str, name: &[u8], owner: QueueOwner) -> u32 {
        let mut inner = lock(&self.inner);
        let key = (vm_id.to_string(), name.to_vec());
        let token = match inner.tokens.get(&key) {
            Some(t) => *t,
            None => {
                let mut t = inner.next_token.wrapping_add(1);
                while t == 0 || inner.queues.contains_key(&t) {
                    t = t.wrapping_add(1);
                }
                inner.next_token = t;
                inner.tokens.insert(key, t);
                t
            }
        };
        let entry = inner
            .queues
            .entry(token)
            .or_insert_with(|| (owner, VecDeque::new()));
        entry.0 = owner;
        token
    }

    pub fn resolve(&self, vm_id: &[u8], name: &[u8]) -> Option<u32> {
        let inner = lock(&self.inner);
        let key = (String::from_utf8_lossy(vm_id).into_owned(), name.to_vec());
        inner.tokens.get(&key).copied()
    }

    pub fn dequeue(&self, token: u32) -> Result<Vec<u8>, Status> {
        let mut inner = lock(&self.inner);
        let (_, q) = inner.queues.get_mut(&token).ok_or(Status::NOT_FOUND)?;
        q.pop_front().ok_or(Status::EMPTY)
    }

    pub fn enqueue(&self, token: u32, data: &[u8]) -> Result<QueueOwner, Status> {
        let mut inner = lock(&self.inner);
        let (owner, q) = inner.queues.get_mut(&token).ok_or(Status::NOT_FOUND)?;
        q.push_back(data.to_vec());
        Ok(*owner)
    }
}
