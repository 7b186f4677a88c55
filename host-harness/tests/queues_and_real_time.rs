//! Shared queues with `proxy_on_queue_ready` delivery (cpp-host semantics), and the real-time
//! clock mode.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{events, probe, Wat};
use meshward_harness::{ClockMode, Host, Request};

/// A module whose request registers queue "q", resolves it by (vm_id "", "q"), and enqueues
/// "hello" on it; its `proxy_on_queue_ready` dequeues and logs what it got, then logs "empty"
/// if a second dequeue reports EMPTY (7). Enqueueing to an unknown token must be NOT_FOUND (1),
/// and resolving an unknown queue too: it logs "notfound" for each.
fn queue_module() -> Wat {
    // Offsets in a data segment of its own, far from the lifecycle module's strings.
    // 60000 "q", 60001 "hello", 60006 "empty", 60011 "notfound", 60019 "zz";
    // scratch: 60100 token, 60104 resolved token, 60108 value ptr, 60112 value len.
    Wat {
        extra_imports: r#"
  (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
  (import "env" "proxy_resolve_shared_queue" (func $resolve (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))"#
            .into(),
        on_request: r#"
    (drop (call $register (i32.const 60000) (i32.const 1) (i32.const 60100)))
    (drop (call $resolve (i32.const 0) (i32.const 0) (i32.const 60000) (i32.const 1) (i32.const 60104)))
    (if (i32.eq (i32.load (i32.const 60100)) (i32.load (i32.const 60104)))
      (then (drop (call $enqueue (i32.load (i32.const 60104)) (i32.const 60001) (i32.const 5)))))
    (if (i32.eq (call $enqueue (i32.const 999999) (i32.const 60001) (i32.const 5)) (i32.const 1))
      (then (drop (call $log (i32.const 2) (i32.const 60011) (i32.const 8)))))
    (if (i32.eq (call $resolve (i32.const 0) (i32.const 0) (i32.const 60019) (i32.const 2) (i32.const 60104)) (i32.const 1))
      (then (drop (call $log (i32.const 2) (i32.const 60011) (i32.const 8)))))"#
            .into(),
        extra: r#"
  (data (i32.const 60000) "qhelloemptynotfoundzz")
  (func (export "proxy_on_queue_ready") (param $ctx i32) (param $token i32)
    (if (i32.eqz (call $dequeue (local.get $token) (i32.const 60108) (i32.const 60112)))
      (then (drop (call $log (i32.const 2) (i32.load (i32.const 60108)) (i32.load (i32.const 60112))))))
    (if (i32.eq (call $dequeue (local.get $token) (i32.const 60108) (i32.const 60112)) (i32.const 7))
      (then (drop (call $log (i32.const 2) (i32.const 60006) (i32.const 5))))))"#
            .into(),
        ..Wat::default()
    }
}

#[test]
fn an_enqueue_is_delivered_once_to_the_registrant_by_on_queue_ready() {
    let host = Host::builder()
        .workers(2)
        .filter(queue_module().spec("q"))
        .build()
        .unwrap();
    let out = host.send(&Request::get("/").worker(1));
    assert_eq!(out.status(), 200);
    let seen = events(&host.logs(), "q");
    // The request ran first; the notification came after it (never inside the enqueue call).
    let request = seen.iter().position(|e| e == "request_headers").unwrap();
    let hello: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, e)| *e == "hello")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hello.len(), 1, "delivered exactly once: {seen:?}");
    assert!(hello[0] > request, "{seen:?}");
    assert_eq!(
        seen.get(hello[0] + 1).map(String::as_str),
        Some("empty"),
        "a drained queue dequeues EMPTY: {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|e| *e == "notfound").count(),
        2,
        "unknown token and unknown queue are NOT_FOUND: {seen:?}"
    );
}

#[test]
fn each_enqueue_notifies_again_and_registering_twice_keeps_the_token() {
    let host = Host::builder()
        .filter(queue_module().spec("q"))
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(host.send(&Request::get("/")).status(), 200);
    }
    let seen = events(&host.logs(), "q");
    // Three requests re-register the same queue (same token: the resolve check passes each
    // time) and enqueue once each: three deliveries, each draining the queue.
    assert_eq!(seen.iter().filter(|e| *e == "hello").count(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|e| *e == "empty").count(), 3, "{seen:?}");
}

#[test]
fn real_time_mode_reads_the_wall_clock_and_fires_ticks_in_real_time() {
    let host = Host::builder()
        .clock(ClockMode::Real)
        .filter(probe("p").config("tick_ms=20"))
        .build()
        .unwrap();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let now = host.now_ns();
    assert!(
        now.abs_diff(wall) < 5_000_000_000,
        "real mode reports wall time: host {now}, wall {wall}"
    );
    // `advance` sleeps in real mode, and ticks fire as their due times pass.
    let started = Instant::now();
    host.advance(Duration::from_millis(100));
    let slept = started.elapsed();
    assert!(slept >= Duration::from_millis(100), "slept {slept:?}");
    let ticks = host.metric("probe.ticks").unwrap_or(0);
    // main + 1 worker root contexts, a 20 ms period over 100 ms: 5 each.
    assert_eq!(ticks, 10, "ticks after 100 ms of real time");
    // And the module's own reading moved with the wall clock, not with a virtual offset.
    let later = host.now_ns();
    assert!(later - now >= 100_000_000, "{later} - {now}");
}
