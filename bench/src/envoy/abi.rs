//! `meshward bench abi`: what each proxy-wasm crossing costs a real Envoy 1.40, per call.
//!
//! The main table says a filter costs Envoy several times what the harness measures for the same
//! module, and that the difference lies in the crossings between Envoy and the VM, not in the
//! filters' logic. This measures the crossings themselves: one listener per kind of host call,
//! each holding the `hostcall-cost` test module (tests/modules/hostcall-cost) configured to make
//! that call `--calls` times per request; beside them the router alone, the SDK no-op (every
//! callback exported) and the no-op trimmed to `proxy_on_request_headers`. The price of one call is
//! (its row − the trimmed no-op's) ÷ the calls per request; the price of one VM entry is (SDK
//! no-op − trimmed no-op) ÷ the 4 callbacks trimming removes. Two more rows do guest work
//! without host calls (an allocation, a hash), to set V8's speed on a module's own code beside
//! the crossings. Same load, same request, same interleaved rounds as `meshward bench envoy`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use meshward_test_hostcall_cost::Kind;
use serde_json::{json, Map};

use crate::envoy::markdown::{cpu_range, cpu_us, micros, section_head, update_section};
use crate::envoy::setups::{self, Check, Inputs, Plan, Setup, WasmEntry};
use crate::envoy::{BenchOptions, Rig, Row, RunInfo, SanityCheck, PATH};

pub const BEGIN_MARKER: &str = "<!-- meshward bench abi: begin (generated, rerun to update) -->";
pub const END_MARKER: &str = "<!-- meshward bench abi: end -->";
/// The heading the section gets when a file has none of its markers yet.
pub const HEADING: &str = "## Real Envoy: the price of each host call (`meshward bench abi`)";

/// Callbacks the SDK no-op exports that the trimmed one does not (`proxy_on_response_headers`,
/// `proxy_on_response_body`, `proxy_on_log`, `proxy_on_done`, with `proxy_on_delete` entered
/// either way: its export is kept, see crates/trim-callbacks), all entered once per request.
pub const TRIMMED_ENTRIES: u32 = 4;

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct AbiReport {
    pub options: BenchOptions,
    /// Host calls of the kind each cost row makes per request.
    pub calls: u32,
    pub rows: Vec<Row>,
    /// Every listener answered the measured request 200 before the rounds.
    pub checks: Vec<SanityCheck>,
    /// Where and when it ran, and on which Envoy.
    pub run: RunInfo,
}

/// Kinds also measured with a single call per request, with their listeners: a crossing's code
/// path is cold at a request's first call and warm at its 50th, so the repeated calls give the
/// marginal price and the single call what one isolated call costs a request.
pub const ONCE: [(Kind, &str); 3] = [
    (Kind::Metric, "metric-once"),
    (Kind::Property, "property-once"),
    (Kind::HeaderMap, "header-map-once"),
];

/// The configuration name of the row making `times` calls of `kind` per request.
pub fn row_name(kind: Kind, times: u32) -> String {
    format!("{} × {times}", kind.call())
}

/// The cost rows: every kind `calls` times, then the [`ONCE`] kinds once.
fn cost_rows(calls: u32) -> Vec<(Kind, u32, &'static str)> {
    Kind::ALL
        .into_iter()
        .map(|k| (k, calls, k.name()))
        .chain(ONCE.into_iter().map(|(k, listener)| (k, 1, listener)))
        .collect()
}

/// The floors and one row per kind of host call.
fn plan(inputs: &Inputs, calls: u32) -> Result<Plan> {
    let module = "meshward_test_hostcall_cost.wasm";
    let mut listeners = vec![
        setups::native_listener("router", vec![], Map::new()),
        setups::wasm_listener(
            "noop",
            vec![setups::wasm(inputs, "noop", "meshward_test_noop.wasm", "")?],
            Map::new(),
        )?,
        setups::wasm_listener(
            "noop-trimmed",
            vec![setups::trimmed_noop(inputs)?],
            Map::new(),
        )?,
    ];
    let cost = setups::wasm(inputs, "hostcall-cost", module, "")?;
    // Trimmed as the shipped filters are: the rows differ from the trimmed no-op by their calls.
    let trimmed = setups::request_headers_only(
        inputs,
        &cost,
        "meshward_test_hostcall_cost_request_headers_only.wasm",
    )?;
    for (kind, times, listener) in cost_rows(calls) {
        let config = json!({"call": kind.name(), "times": times}).to_string();
        listeners.push(setups::wasm_listener(
            listener,
            vec![WasmEntry {
                config,
                ..trimmed.clone()
            }],
            Map::new(),
        )?);
    }
    // The measured request of `meshward bench envoy` (20 headers, `x-tenant` among them); its
    // token is not checked here.
    let base = setups::base_request("x.y.z");
    let ok = || Check {
        what: "the measured request passes (200)".into(),
        request: setups::closing(base.clone()),
        status: 200,
        header: None,
    };
    let setup = |name: String, listener: &'static str, side: &'static str| Setup {
        name,
        listener,
        side,
        sample: vec![base.clone(), base.clone()],
        requests: vec![base.to_bytes()],
        checks: vec![ok()],
    };
    let mut rows = vec![
        setup("router only".into(), "router", "floor"),
        setup("no-op wasm".into(), "noop", "floor"),
        setup(
            "no-op wasm, request-headers callback only".into(),
            "noop-trimmed",
            "floor",
        ),
    ];
    for (kind, times, listener) in cost_rows(calls) {
        rows.push(setup(row_name(kind, times), listener, "cost"));
    }
    Ok(Plan {
        listeners,
        setups: rows,
    })
}

/// Runs the measurement: `calls` host calls of each kind per request.
pub fn run(options: &BenchOptions, calls: u32) -> Result<AbiReport> {
    if options.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if calls == 0 {
        bail!("--calls must be at least 1");
    }
    let run = RunInfo::gather()?;
    let rig = Rig::new(options)?;
    let plan = plan(&rig.inputs, calls)?;
    let measured = crate::envoy::measure(&plan, options, &rig)?;
    // The harness's count proves each row makes exactly its calls (and the floors none).
    for row in &measured.rows {
        let made: u64 = row.hostcalls.iter().map(|(_, n)| n).sum();
        let expected = match cost_rows(calls)
            .into_iter()
            .find(|(k, times, _)| row.name == row_name(*k, *times))
        {
            Some((kind, times, _)) if kind.is_host_call() => u64::from(times),
            _ => 0,
        };
        if made != expected {
            bail!(
                "{}: {made} host calls per request in the harness, expected {expected}",
                row.name
            );
        }
    }
    Ok(AbiReport {
        options: options.clone(),
        calls,
        rows: measured.rows,
        checks: measured.checks,
        run,
    })
}

impl AbiReport {
    /// The row of the configuration named `name`.
    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    fn median_us(&self, name: &str) -> Option<f64> {
        self.row(name).map(|r| cpu_us(&r.median))
    }

    /// Envoy CPU of one VM entry: (SDK no-op − trimmed no-op) ÷ [`TRIMMED_ENTRIES`].
    pub fn vm_entry_us(&self) -> Option<f64> {
        let sdk = self.median_us("no-op wasm")?;
        let trimmed = self.median_us("no-op wasm, request-headers callback only")?;
        Some((sdk - trimmed) / f64::from(TRIMMED_ENTRIES))
    }

    /// Envoy CPU of one call of `kind` made `times` times per request: (its row − trimmed no-op)
    /// ÷ `times`.
    pub fn per_call_us(&self, kind: Kind, times: u32) -> Option<f64> {
        let row = self.median_us(&row_name(kind, times))?;
        let trimmed = self.median_us("no-op wasm, request-headers callback only")?;
        Some((row - trimmed) / f64::from(times.max(1)))
    }
}

/// The generated section, markers included.
pub fn render(report: &AbiReport) -> String {
    let o = &report.options;
    let mut s = section_head(BEGIN_MARKER, &report.run, &o.command);
    let _ = writeln!(
        s,
        "Envoy `--concurrency {}`; {} keep-alive mTLS connections, closed loop; {} interleaved \
         rounds × {:.1} s per configuration after a {:.1} s warm-up each; medians over the rounds. \
         Request: `GET {PATH}` with the 20 headers of `meshward bench envoy`. Each cost row is the \
         `hostcall-cost` test module, trimmed to `proxy_on_request_headers` like the shipped \
         filters, making its call {} times per request, and three kinds once (the harness counted \
         exactly that many host calls on the same request for each row, and none for the two rows \
         of guest work). Per call = (row − trimmed no-op) ÷ calls per request: the repeated calls \
         give the marginal price of a crossing whose code paths are warm, the single ones what an \
         isolated call costs a request.",
        o.concurrency,
        o.connections,
        o.rounds,
        o.round.as_secs_f64(),
        o.warmup.as_secs_f64(),
        report.calls,
    );
    let _ = writeln!(s);
    let trimmed = report
        .median_us("no-op wasm, request-headers callback only")
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "| configuration | Envoy CPU / req | (rounds: min–max) | − trimmed no-op | per call |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for row in &report.rows {
        let us = cpu_us(&row.median);
        let times = cost_rows(report.calls)
            .into_iter()
            .find(|(k, t, _)| row.name == row_name(*k, *t))
            .map(|(_, t, _)| t);
        let per_call = match times {
            Some(t) => format!("{:.2} µs", (us - trimmed) / f64::from(t.max(1))),
            None => "–".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:+.1} µs | {per_call} |",
            row.name,
            micros(row.median.cpu_per_request),
            cpu_range(&row.rounds),
            us - trimmed,
        );
    }
    let _ = writeln!(s);
    if let Some(entry) = report.vm_entry_us() {
        let _ = writeln!(
            s,
            "One VM entry (a callback Envoy calls into the module): (no-op − trimmed no-op) ÷ {} = \
             {entry:.2} µs.",
            TRIMMED_ENTRIES
        );
    }
    let _ = writeln!(s, "{END_MARKER}");
    s
}

/// Replaces the generated section of `path` (or appends it under [`HEADING`]).
pub fn update_file(path: &Path, section: &str) -> Result<()> {
    update_section(path, section, (BEGIN_MARKER, END_MARKER), HEADING)
}
