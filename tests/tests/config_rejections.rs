//! Bad configs are refused by `on_configure` with a log line naming the field — in the harness
//! (HostError::ConfigRejected with the module's logs) and in real Envoy 1.40 (validation fails,
//! "Unable to create Wasm plugin", the same log line). Cases: tests/config-rejections/<filter>.yaml.

use meshward_harness::{FilterSpec, Host, HostError};
use meshward_rig::{EchoUpstream, Envoy, EnvoyConfig, WasmFilter};
use meshward_tests::wasm;

use meshward_tests::config_rejections as cases;

/// The error line every filter logs: ConfigError's Display.
fn needle(field: &str) -> String {
    format!("field `{field}`")
}

fn rejected_in_harness(filter: &str) {
    let module = wasm(filter);
    let mut failures = Vec::new();
    for case in cases(filter) {
        let config = serde_json::to_string(&case.config).unwrap();
        let spec = FilterSpec::from_file(&module)
            .unwrap()
            .name(filter)
            .config(config.into_bytes());
        match Host::builder().filter(spec).build() {
            Err(HostError::ConfigRejected { logs, .. }) => {
                if !logs
                    .iter()
                    .any(|l| l.message.contains(&needle(&case.field)))
                {
                    failures.push(format!(
                        "{}: rejected, but no log names {}: {logs:?}",
                        case.name,
                        needle(&case.field)
                    ));
                }
            }
            Err(other) => failures.push(format!("{}: failed otherwise: {other}", case.name)),
            Ok(_) => failures.push(format!("{}: accepted", case.name)),
        }
    }
    assert!(failures.is_empty(), "{filter}:\n{}", failures.join("\n"));
}

fn rejected_in_envoy(filter: &str) {
    let module = wasm(filter);
    let upstream = EchoUpstream::start().unwrap();
    let mut failures = Vec::new();
    for case in cases(filter) {
        let config = serde_json::to_string(&case.config).unwrap();
        let envoy =
            EnvoyConfig::new(upstream.addr()).filter(WasmFilter::new(filter, &module, &config));
        match Envoy::validate_or_start_expect_failure(&envoy) {
            Ok(failure) => {
                if failure.status.success() {
                    failures.push(format!("{}: Envoy exited 0", case.name));
                }
                if !failure.log.contains(&needle(&case.field)) {
                    failures.push(format!(
                        "{}: Envoy's log does not name {}:\n{}",
                        case.name,
                        needle(&case.field),
                        tail(&failure.log)
                    ));
                }
                if !failure.log.contains("Unable to create Wasm plugin") {
                    failures.push(format!(
                        "{}: no 'Unable to create Wasm plugin' in Envoy's log",
                        case.name
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {e:#}", case.name)),
        }
    }
    assert!(failures.is_empty(), "{filter}:\n{}", failures.join("\n"));
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[test]
fn header_limits_rejects_bad_configs_in_the_harness() {
    rejected_in_harness("header-limits");
}
#[test]
fn header_limits_rejects_bad_configs_in_envoy() {
    rejected_in_envoy("header-limits");
}
#[test]
fn spiffe_authz_rejects_bad_configs_in_the_harness() {
    rejected_in_harness("spiffe-authz");
}
#[test]
fn spiffe_authz_rejects_bad_configs_in_envoy() {
    rejected_in_envoy("spiffe-authz");
}
#[test]
fn jwt_authn_rejects_bad_configs_in_the_harness() {
    rejected_in_harness("jwt-authn");
}
#[test]
fn jwt_authn_rejects_bad_configs_in_envoy() {
    rejected_in_envoy("jwt-authn");
}
#[test]
fn rate_limit_rejects_bad_configs_in_the_harness() {
    rejected_in_harness("rate-limit");
}
#[test]
fn rate_limit_rejects_bad_configs_in_envoy() {
    rejected_in_envoy("rate-limit");
}
