//! The report as its own generated section of BENCHMARKS.md (markers of its own, so a rerun of
//! `meshward bench tcp` replaces it and nothing else), in the style of `meshward bench envoy`'s.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::envoy::markdown::{cpu_range, cpu_us, micros, ratio, section_head, update_section};
use crate::envoy::{Figures, CLIENT_SPIFFE_ID};
use crate::tcp::{TcpBenchReport, PAYLOAD_BYTES};

pub const BEGIN_MARKER: &str = "<!-- meshward bench tcp: begin (generated, rerun to update) -->";
pub const END_MARKER: &str = "<!-- meshward bench tcp: end -->";
/// The heading the section gets when a file has none of its markers yet.
pub const HEADING: &str =
    "## Real Envoy, TCP: spiffe-authz-tcp against native network RBAC (`meshward bench tcp`)";

/// `a ÷ b` of two figures' CPU per connection.
fn cpu_ratio(a: &Figures, b: &Figures) -> String {
    ratio(cpu_us(a), cpu_us(b))
}

/// The generated section, markers included.
pub fn render(report: &TcpBenchReport) -> String {
    let o = &report.options;
    let mut s = section_head(BEGIN_MARKER, &report.run, &o.command);
    let _ = writeln!(
        s,
        "Envoy `--concurrency {}`; load generator: {} closed-loop client threads in {} build of \
         meshward, each connection a TCP connect, a full mTLS handshake (rustls, client certificate \
         `{}`, no session resumption), {} bytes written and read back from the echo upstream, and a \
         close; {} interleaved rounds × {:.1} s per configuration after a {:.1} s warm-up each; \
         figures are medians over the rounds. Connection time: connect to close, as the client \
         sees it. Envoy CPU / connection = utime + stime of the Envoy process over the turn ÷ the \
         connections completed in it. Envoy RSS after warm-up (all {} listeners): {:.1} MiB.",
        o.concurrency,
        o.clients,
        if cfg!(debug_assertions) {
            "a debug"
        } else {
            "an optimised"
        },
        CLIENT_SPIFFE_ID,
        PAYLOAD_BYTES,
        o.rounds,
        o.round.as_secs_f64(),
        o.warmup.as_secs_f64(),
        report.rows.len(),
        report.envoy_rss_kib as f64 / 1024.0,
    );
    let _ = writeln!(s);
    let median_of = |listener: &str| report.row(listener).map(|r| r.median).unwrap_or_default();
    let floor = median_of("tcp-proxy");
    let native = median_of("network-rbac");
    let _ = writeln!(
        s,
        "| configuration | side | conn/s | conn/s ÷ tcp_proxy | p50 | p99 | Envoy CPU / conn | (rounds: min–max) | ÷ tcp_proxy only | ÷ native RBAC | − tcp_proxy |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &report.rows {
        let m = &row.median;
        let against_native = match row.side.as_str() {
            "meshward" | "native" => cpu_ratio(m, &native),
            _ => "–".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:+.1} µs |",
            row.name,
            row.side,
            m.requests_per_second,
            ratio(m.requests_per_second, floor.requests_per_second),
            micros(m.p50),
            micros(m.p99),
            micros(m.cpu_per_request),
            cpu_range(&row.rounds),
            cpu_ratio(m, &floor),
            against_native,
            cpu_us(m) - cpu_us(&floor),
        );
    }
    if let (Some(meshward), Some(native_row)) =
        (report.row("spiffe-authz-tcp"), report.row("network-rbac"))
    {
        let (m, n) = (&meshward.median, &native_row.median);
        let noop = median_of("noop");
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "meshward ÷ native RBAC: {} the connections/s, {} the Envoy CPU per connection; over \
             `tcp_proxy` only, spiffe-authz-tcp adds {:+.1} µs per connection and network RBAC \
             {:+.1} µs (the no-op wasm network filter: {:+.1} µs).",
            ratio(m.requests_per_second, n.requests_per_second),
            cpu_ratio(m, n),
            cpu_us(m) - cpu_us(&floor),
            cpu_us(n) - cpu_us(&floor),
            cpu_us(&noop) - cpu_us(&floor),
        );
    }
    if !report.memory.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Envoy RSS, one Envoy per configuration holding only its listener, `--concurrency {}`, \
             after {} clients of traffic (a wasm VM on the main thread and on each worker):",
            crate::envoy::MEMORY_CONCURRENCY,
            o.clients.max(4),
        );
        crate::envoy::markdown::rss_table(
            &mut s,
            "configuration",
            "tcp_proxy only",
            report.memory.iter().map(|m| (m.name.as_str(), m.rss_kib)),
        );
    }
    crate::envoy::markdown::modules_line(&mut s, &report.modules);
    let _ = writeln!(s);
    let u = &report.upstream_direct;
    let _ = writeln!(
        s,
        "Upstream alone (same clients and payload, plaintext, no Envoy): {:.0} conn/s, p50 {}, p99 \
         {} — {} the `tcp_proxy`-only rate through Envoy, so the echo upstream is not the bottleneck.",
        u.requests_per_second,
        micros(u.p50),
        micros(u.p99),
        ratio(u.requests_per_second, floor.requests_per_second),
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Sanity checks before measuring ({}; “reported” = not required to pass): {}.",
        report.checks.len(),
        report
            .checks
            .iter()
            .map(|c| format!(
                "{}: {} → {}{}",
                c.listener,
                c.what,
                c.outcome,
                if c.enforced { "" } else { " (reported)" }
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(s, "{END_MARKER}");
    s
}

/// Replaces this benchmark's generated section of `path` (or appends it under [`HEADING`]).
pub fn update_file(path: &Path, section: &str) -> Result<()> {
    update_section(path, section, (BEGIN_MARKER, END_MARKER), HEADING)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::envoy::{median, RunInfo};
    use crate::tcp::{TcpBenchOptions, TcpCheck, TcpMemory, TcpRow};

    fn figures(conns: f64, cpu_us: u64) -> Figures {
        Figures {
            requests: 100,
            requests_per_second: conns,
            p50: Duration::from_micros(900),
            p99: Duration::from_micros(2500),
            cpu_per_request: Duration::from_micros(cpu_us),
        }
    }

    fn row(name: &str, listener: &str, side: &str, rounds: Vec<Figures>) -> TcpRow {
        TcpRow {
            name: name.into(),
            listener: listener.into(),
            side: side.into(),
            median: median(&rounds),
            rounds,
        }
    }

    fn report() -> TcpBenchReport {
        TcpBenchReport {
            options: TcpBenchOptions {
                command: "meshward bench tcp".into(),
                ..TcpBenchOptions::default()
            },
            rows: vec![
                row(
                    "tcp_proxy only",
                    "tcp-proxy",
                    "floor",
                    vec![
                        figures(1000.0, 400),
                        figures(900.0, 420),
                        figures(1100.0, 390),
                    ],
                ),
                row("no-op", "noop", "floor", vec![figures(950.0, 410)]),
                row(
                    "spiffe-authz-tcp",
                    "spiffe-authz-tcp",
                    "meshward",
                    vec![
                        figures(800.0, 500),
                        figures(820.0, 480),
                        figures(700.0, 560),
                    ],
                ),
                row(
                    "network RBAC",
                    "network-rbac",
                    "native",
                    vec![figures(990.0, 400)],
                ),
            ],
            checks: vec![TcpCheck {
                listener: "network-rbac".into(),
                what: "no cert".into(),
                outcome: "closed by Envoy, no byte echoed".into(),
                enforced: false,
            }],
            upstream_direct: figures(20000.0, 0),
            run: RunInfo {
                date: "2026-12-06".into(),
                nproc: 2,
                cpu_model: "cpu".into(),
                load_before: "0.1 0.2 0.3".into(),
                envoy_version: "x/1.40.0".into(),
            },
            envoy_rss_kib: 100 * 1024,
            memory: vec![
                TcpMemory {
                    name: "tcp_proxy only".into(),
                    rss_kib: 60 * 1024,
                },
                TcpMemory {
                    name: "spiffe-authz-tcp".into(),
                    rss_kib: 90 * 1024,
                },
            ],
            modules: vec![("spiffe_authz_tcp.wasm".into(), 2048)],
        }
    }

    #[test]
    fn the_table_gives_medians_and_the_meshward_row_its_ratios_to_the_floor_and_native() {
        let text = render(&report());
        assert!(text.starts_with(BEGIN_MARKER) && text.ends_with(&format!("{END_MARKER}\n")));
        // Medians: 1000 conn/s and 400 µs for the floor; 800 conn/s and 500 µs for meshward.
        assert!(
            text.contains(
                "| tcp_proxy only | floor | 1000 | 1.00× | 900 µs | 2500 µs | 400 µs | 390–420 µs | 1.00× | – | +0.0 µs |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| spiffe-authz-tcp | meshward | 800 | 0.80× | 900 µs | 2500 µs | 500 µs | 480–560 µs | 1.25× | 1.25× | +100.0 µs |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| network RBAC | native | 990 | 0.99× |"),
            "{text}"
        );
        assert!(
            text.contains("meshward ÷ native RBAC: 0.81× the connections/s, 1.25× the Envoy CPU per connection; over `tcp_proxy` only, spiffe-authz-tcp adds +100.0 µs per connection and network RBAC +0.0 µs (the no-op wasm network filter: +10.0 µs)."),
            "{text}"
        );
        assert!(
            text.contains("| spiffe-authz-tcp | 90.0 MiB | +30.0 MiB |"),
            "{text}"
        );
        assert!(text.contains("no cert → closed by Envoy, no byte echoed (reported)"));
        assert!(text.contains("20000 conn/s"), "{text}");
    }

    #[test]
    fn a_rerun_replaces_only_its_own_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("BENCHMARKS.md");
        let envoy_section = format!(
            "{}\nenvoy table\n{}\n",
            crate::envoy::BEGIN_MARKER,
            crate::envoy::END_MARKER
        );
        std::fs::write(&path, format!("# b\n\n{envoy_section}\nafter\n")).unwrap();
        update_file(&path, &format!("{BEGIN_MARKER}\none\n{END_MARKER}\n")).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.contains(&envoy_section));
        assert!(
            first.ends_with(&format!(
                "after\n\n{HEADING}\n\n{BEGIN_MARKER}\none\n{END_MARKER}\n"
            )),
            "{first}"
        );
        update_file(&path, &format!("{BEGIN_MARKER}\ntwo\n{END_MARKER}\n")).unwrap();
        let second = std::fs::read_to_string(&path).unwrap();
        assert_eq!(second, first.replace("\none\n", "\ntwo\n"));
    }
}
