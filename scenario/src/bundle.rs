//! A chain of meshward filters as one `filter: meshward` entry (the bundle, `meshward.wasm`):
//! each filter's config becomes its section of the bundle's config. Used by
//! tests/bundle_parity.rs to run every scenario both ways and require the same outcome.

use std::path::Path;

use serde_json::{Map, Value};

use crate::model::{ChainEntry, Scenario};

/// The bundle's filter name (`<wasm dir>/meshward.wasm`).
pub const BUNDLE: &str = "meshward";

/// The bundled filters in the order the bundle runs them, with their config sections.
pub const ORDER: [(&str, &str); 4] = [
    ("header-limits", "headerLimits"),
    ("jwt-authn", "jwtAuthn"),
    ("spiffe-authz", "spiffeAuthz"),
    ("rate-limit", "rateLimit"),
];

/// `scenario` with its chain replaced by one bundle entry; why not, when the chain is not
/// meshward filters in bundle order (each at most once, nothing else in between).
pub fn bundled(scenario: &Scenario) -> Result<Scenario, String> {
    let base = scenario.base_dir();
    let mut sections = Map::new();
    let mut last = None;
    for entry in &scenario.chain {
        let name = match (&entry.filter, &entry.module) {
            (Some(name), None) => name.as_str(),
            _ => return Err("a module that is not a meshward filter".into()),
        };
        let position = ORDER
            .iter()
            .position(|(filter, _)| *filter == name)
            .ok_or_else(|| format!("`{name}` is not one of the bundled filters"))?;
        if last.is_some_and(|l| l >= position) {
            return Err(format!("`{name}` out of the bundle's order (or twice)"));
        }
        last = Some(position);
        if entry.fail_open || entry.failure_policy.is_some() {
            return Err(format!(
                "`{name}` is failOpen or has a failurePolicy (the bundle has one fail policy)"
            ));
        }
        if entry.vm_config.is_some() {
            return Err(format!("`{name}` has a vmConfig (the bundle has one VM)"));
        }
        let section = ORDER.get(position).map(|(_, s)| *s).unwrap_or_default();
        sections.insert(section.to_string(), section_config(entry, &base)?);
    }
    if sections.is_empty() {
        return Err("an empty chain".into());
    }
    let mut out = scenario.clone();
    out.chain = vec![ChainEntry {
        filter: Some(BUNDLE.to_string()),
        module: None,
        sha256: None,
        insecure_registry: false,
        name: None,
        root_id: None,
        vm_id: None,
        config: Some(Value::Object(sections)),
        config_file: None,
        fail_open: false,
        vm_config: None,
        failure_policy: None,
        reload_backoff: None,
    }];
    Ok(out)
}

/// A filter's config as the JSON value its section holds (no config: `{}`, as the filter reads
/// an empty configuration).
fn section_config(entry: &ChainEntry, base: &Path) -> Result<Value, String> {
    let bytes = entry.config_bytes(base).map_err(|e| format!("{e:#}"))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("a config that is not JSON ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(chain: &str) -> Scenario {
        let yaml = format!(
            "chain: {chain}\ncases: [{{name: c, request: {{path: /}}, expect: {{status: 200}}}}]\n"
        );
        Scenario::from_yaml(&yaml, Path::new("t.yaml")).unwrap()
    }

    #[test]
    fn a_chain_in_order_becomes_one_entry_with_sections() {
        let s = scenario(
            "[{filter: header-limits}, {filter: spiffe-authz, name: authz, config: {dryRun: true}}]",
        );
        let b = bundled(&s).unwrap();
        assert_eq!(b.chain.len(), 1);
        assert_eq!(b.chain[0].filter.as_deref(), Some("meshward"));
        assert_eq!(
            b.chain[0].config,
            Some(serde_json::json!({"headerLimits": {}, "spiffeAuthz": {"dryRun": true}}))
        );
        assert_eq!(b.cases.len(), 1);
    }

    #[test]
    fn other_chains_say_why_not() {
        for (chain, why) in [
            ("[{filter: spiffe-authz}, {filter: jwt-authn}]", "order"),
            ("[{filter: jwt-authn}, {filter: jwt-authn}]", "twice"),
            ("[{module: x.wasm}]", "module"),
            ("[{filter: noop}]", "not one of"),
            ("[{filter: rate-limit, failOpen: true}]", "failOpen"),
        ] {
            let e = bundled(&scenario(chain)).unwrap_err();
            assert!(e.contains(why), "{chain}: {e}");
        }
    }
}
