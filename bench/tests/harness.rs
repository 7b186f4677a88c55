//! `meshward bench`'s measuring loop over the harness (moved from host-harness/tests/runtime.rs
//! with the bench itself).

use std::path::PathBuf;
use std::time::Duration;

use meshward_harness::{FilterSpec, Host, Request};

/// The probe test module (`cargo build --release --target wasm32-wasip1 -p meshward-test-probe`).
fn probe(name: &str) -> FilterSpec {
    let dir = meshward_rig::default_wasm_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let path = dir.join("meshward_test_probe.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --target wasm32-wasip1 -p meshward-test-probe` first",
        path.display()
    );
    FilterSpec::from_file(path).unwrap().name(name)
}

#[test]
fn bench_reports_counts_and_ordered_percentiles() {
    let host = Host::builder()
        .workers(2)
        .filter(probe("p"))
        .build()
        .unwrap();
    let report = meshward_bench::bench(
        &host,
        &meshward_bench::BenchOptions {
            requests: vec![Request::get("/").header("x-a", "1")],
            count: Some(200),
            duration: None,
            threads: 2,
        },
    );
    assert_eq!(report.requests, 200);
    assert_eq!(report.status_changes, 0);
    assert!(report.p50 <= report.p99 && report.p99 <= report.p999);
    assert!(report.requests_per_second > 0.0);
    assert_eq!(report.per_filter_mean.len(), 1);
    assert!(report.per_filter_mean[0].1 > Duration::ZERO);
}
