//! The report as a Markdown section of BENCHMARKS.md, between marker comments so that a rerun
//! replaces it (and nothing else).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::envoy::{BenchReport, Figures, RunInfo};

pub const BEGIN_MARKER: &str = "<!-- meshward bench envoy: begin (generated, rerun to update) -->";
pub const END_MARKER: &str = "<!-- meshward bench envoy: end -->";

pub(crate) fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

pub(crate) fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

pub(crate) fn cpu_us(f: &Figures) -> f64 {
    f.cpu_per_request.as_secs_f64() * 1e6
}

/// The smallest and largest CPU time per request over the rounds (the noise to judge a delta by).
pub(crate) fn cpu_range(rounds: &[Figures]) -> String {
    let values = || rounds.iter().map(cpu_us);
    let min = values().fold(f64::INFINITY, f64::min);
    let max = values().fold(0.0, f64::max);
    if min.is_finite() {
        format!("{min:.0}–{max:.0} µs")
    } else {
        "–".into()
    }
}

/// `26.1k`, or `header-limits 26.1k · jwt-authn 83.5k = 109.6k` for a chain; `–` without wasm
/// filters or without metering.
fn instructions(fuel: &[(String, u64)]) -> String {
    let k = |n: u64| format!("{:.1}k", n as f64 / 1000.0);
    match fuel {
        [] => "–".into(),
        [(_, n)] => k(*n),
        many => format!(
            "{} = {}",
            many.iter()
                .map(|(f, n)| format!("{f} {}", k(*n)))
                .collect::<Vec<_>>()
                .join(" · "),
            k(many.iter().map(|(_, n)| n).sum::<u64>())
        ),
    }
}

/// `7`, or `header-limits 1 · jwt-authn 7 = 8` for a chain; `–` without wasm filters.
fn hostcalls(calls: &[(String, u64)]) -> String {
    match calls {
        [] => "–".into(),
        [(_, n)] => n.to_string(),
        many => format!(
            "{} = {}",
            many.iter()
                .map(|(f, n)| format!("{f} {n}"))
                .collect::<Vec<_>>()
                .join(" · "),
            many.iter().map(|(_, n)| n).sum::<u64>()
        ),
    }
}

/// A generated section's opening: its begin marker, the date, machine, load and Envoy of the run,
/// and the command that made it.
pub(crate) fn section_head(begin_marker: &str, run: &RunInfo, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{begin_marker}");
    let _ = writeln!(
        s,
        "Date: {} · machine: {} CPUs (`nproc`), {} · load average before the run: {} · Envoy `{}`",
        run.date, run.nproc, run.cpu_model, run.load_before, run.envoy_version
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "```sh\n{command}\n```");
    let _ = writeln!(s);
    s
}

/// The generated section, markers included.
pub fn render(report: &BenchReport) -> String {
    let o = &report.options;
    let mut s = section_head(BEGIN_MARKER, &report.run, &o.command);
    let _ = writeln!(
        s,
        "Envoy `--concurrency {}`; load generator: {} keep-alive mTLS connections (client certificate `{}`), closed loop, in {} build of meshward; \
         {} interleaved rounds × {:.1} s per configuration after a {:.1} s warm-up each; figures are \
         medians over the rounds. Request: `GET {}` with 20 headers (a real RS256 bearer token among \
         them). Envoy CPU = utime + stime of the Envoy process over the round ÷ requests. Envoy RSS \
         after warm-up (all {} listeners, one wasm VM per filter and listener): {:.1} MiB.",
        o.concurrency,
        o.connections,
        crate::envoy::CLIENT_SPIFFE_ID,
        if cfg!(debug_assertions) {
            "a debug"
        } else {
            "an optimised"
        },
        o.rounds,
        o.round.as_secs_f64(),
        o.warmup.as_secs_f64(),
        crate::envoy::PATH,
        report
            .rows
            .iter()
            .map(|r| r.listener.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        report.envoy_rss_kib as f64 / 1024.0,
    );
    let _ = writeln!(s);
    let floor = report.rows.first().map(|r| r.median).unwrap_or_default();
    let noop = report.rows.get(1).map(|r| r.median).unwrap_or_default();
    let _ = writeln!(
        s,
        "| configuration | side | req/s | req/s ÷ router | p50 | p99 | Envoy CPU / req | (rounds: min–max) | ÷ router | ÷ no-op | − router | host calls / req | wasm instructions / req |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for row in &report.rows {
        let m = &row.median;
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:+.1} µs | {} | {} |",
            row.name,
            row.side,
            m.requests_per_second,
            ratio(m.requests_per_second, floor.requests_per_second),
            micros(m.p50),
            micros(m.p99),
            micros(m.cpu_per_request),
            cpu_range(&row.rounds),
            ratio(cpu_us(m), cpu_us(&floor)),
            ratio(cpu_us(m), cpu_us(&noop)),
            cpu_us(m) - cpu_us(&floor),
            hostcalls(&row.hostcalls),
            instructions(&row.fuel),
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Host calls per request: the `env.proxy_*` calls each wasm filter makes for the measured request \
         (for the cold rows: a second cold token), counted by running the same modules, configurations and \
         request in the harness (Envoy has no such counter). Wasm instructions per request: what \
         the same harness run metered (wasmtime fuel, about one unit per wasm operator, \
         `meshward bench --fuel`): each filter's own work, which does not move with the load on \
         the machine as the CPU figures do."
    );
    if !report.memory.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Envoy RSS, one Envoy per chain holding only its listener, `--concurrency {}`, after {} \
             keep-alive connections of traffic (so a VM per wasm filter on the main thread and on \
             each worker):",
            crate::envoy::MEMORY_CONCURRENCY,
            o.connections.max(4),
        );
        rss_table(
            &mut s,
            "chain",
            "router only",
            report.memory.iter().map(|m| (m.name.as_str(), m.rss_kib)),
        );
    }
    modules_line(&mut s, &report.modules);
    let _ = writeln!(s);
    let u = &report.upstream_direct;
    let _ = writeln!(
        s,
        "Upstream alone (same load generator and connections, plaintext, no Envoy): {:.0} req/s, p50 {}, \
         p99 {} — {} the router-only rate through Envoy, so the upstream is not the bottleneck.",
        u.requests_per_second,
        micros(u.p50),
        micros(u.p99),
        ratio(u.requests_per_second, floor.requests_per_second),
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Sanity checks passed before measuring ({}): {}.",
        report.checks.len(),
        report
            .checks
            .iter()
            .map(|c| format!("{}: {}", c.listener, c.what))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(s, "{END_MARKER}");
    s
}

/// Replaces the generated section of `path` (or appends it, with a heading, when the file has no
/// markers yet; creates the file if missing).
pub fn update_file(path: &Path, section: &str) -> Result<()> {
    update_section(
        path,
        section,
        (BEGIN_MARKER, END_MARKER),
        "## Real Envoy: meshward against Envoy's native filters (`meshward bench envoy`)",
    )
}

/// Replaces what lies between `markers` (included) in `path` with `section` (which carries the
/// markers), or appends `heading` and `section` when the file has no such markers yet; creates
/// the file if missing. Shared by the generated sections of `meshward bench envoy` and
/// `meshward bench tcp`.
pub(crate) fn update_section(
    path: &Path,
    section: &str,
    (begin_marker, end_marker): (&str, &str),
    heading: &str,
) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = match (old.find(begin_marker), old.find(end_marker)) {
        (Some(begin), Some(end)) if begin < end => {
            let after = end + end_marker.len();
            let tail = old.get(after..).unwrap_or_default();
            let tail = tail.strip_prefix('\n').unwrap_or(tail);
            format!("{}{section}{tail}", old.get(..begin).unwrap_or_default())
        }
        _ => {
            let mut text = old;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(heading);
            text.push_str("\n\n");
            text.push_str(section);
            text
        }
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// An Envoy RSS table: per configuration (named in the `first_column`), its RSS and the
/// difference to the first row, the `floor` (for `bench envoy` and `bench tcp`).
pub(crate) fn rss_table<'a>(
    s: &mut String,
    first_column: &str,
    floor: &str,
    rows: impl Iterator<Item = (&'a str, u64)> + Clone,
) {
    let _ = writeln!(s);
    let _ = writeln!(s, "| {first_column} | Envoy RSS | − {floor} |");
    let _ = writeln!(s, "|---|---:|---:|");
    let base = rows.clone().next().map_or(0, |(_, kib)| kib);
    for (name, kib) in rows {
        let _ = writeln!(
            s,
            "| {name} | {:.1} MiB | {:+.1} MiB |",
            kib as f64 / 1024.0,
            (kib as f64 - base as f64) / 1024.0
        );
    }
}

/// `Modules: `a.wasm` 117 KiB, …` (nothing when there are none).
pub(crate) fn modules_line(s: &mut String, modules: &[(String, u64)]) {
    if modules.is_empty() {
        return;
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Modules: {}.",
        modules
            .iter()
            .map(|(f, size)| format!("`{f}` {:.0} KiB", *size as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
