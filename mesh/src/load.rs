//! Reading Kubernetes YAML as people keep it in Git: files and directories, several documents per
//! file, `kind: List`. The three security kinds become [`Resource`]s; other kinds are skipped with a
//! note. A malformed resource is an error naming the file, the document, the resource and the
//! field path, with the line where the YAML parser gives one.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;

use crate::resource::{
    Action, AuthorizationPolicySpec, Document, Kind, Metadata, Origin, PeerAuthenticationSpec,
    RequestAuthenticationSpec, Resource, ResourceId, Spec,
};

/// What a set of files held.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub resources: Vec<Resource>,
    /// Documents that were read but are not security resources meshward evaluates.
    pub notes: Vec<String>,
}

/// The API versions of `security.istio.io` that define the three kinds (same schema).
const API_VERSIONS: [&str; 2] = ["security.istio.io/v1", "security.istio.io/v1beta1"];

/// Load every file named, and every `*.yaml`/`*.yml` file under every directory named (sorted,
/// recursively). Nothing found at all is an error: a test against no policies would pass for the
/// wrong reason.
pub fn load(paths: &[PathBuf]) -> Result<Loaded> {
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files)?;
    }
    let mut loaded = Loaded::default();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        load_text(file, &text, &mut loaded)?;
    }
    Ok(loaded)
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("mesh resources {}", path.display()))?;
    if meta.is_file() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading directory {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect(&entry, files)?;
        } else if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(entry);
        }
    }
    Ok(())
}

/// One file's documents (`---`-separated, as Kubernetes' YAML reader splits them).
pub fn load_text(file: &Path, text: &str, loaded: &mut Loaded) -> Result<()> {
    for (index, (line, doc)) in split_documents(text).into_iter().enumerate() {
        let origin = Origin {
            file: file.to_path_buf(),
            document: index + 1,
            line,
            item: None,
        };
        load_document(&origin, &doc, loaded)?;
    }
    Ok(())
}

/// Documents with the line each starts on. Each is padded with the lines before it, so that the
/// YAML parser's line numbers are the file's.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    let mut has_content = false;
    for (i, line) in text.lines().enumerate() {
        let is_separator = line == "---" || line.starts_with("--- ") || line == "...";
        if is_separator {
            if has_content {
                docs.push((start, std::mem::take(&mut current)));
            }
            current = "\n".repeat(i + 1);
            start = i + 2;
            has_content = false;
            continue;
        }
        if !has_content && !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            has_content = true;
            start = i + 1;
        }
        current.push_str(line);
        current.push('\n');
    }
    if has_content {
        docs.push((start, current));
    }
    docs
}

fn load_document(origin: &Origin, text: &str, loaded: &mut Loaded) -> Result<()> {
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| anyhow!("{origin}: {e}"))?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let api = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    if kind == "List" {
        let items = value
            .get("items")
            .and_then(|i| i.as_sequence())
            .ok_or_else(|| anyhow!("{origin}: a `kind: List` needs an `items` list"))?;
        for (i, item) in items.iter().enumerate() {
            let origin = Origin {
                item: Some(i),
                ..origin.clone()
            };
            load_value(&origin, item, loaded)?;
        }
        return Ok(());
    }
    if let Some(kind) = classify(origin, api, kind, loaded)? {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        loaded.resources.push(typed(origin, kind, de)?);
    }
    Ok(())
}

fn load_value(origin: &Origin, value: &serde_yaml_ng::Value, loaded: &mut Loaded) -> Result<()> {
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let api = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    if let Some(kind) = classify(origin, api, kind, loaded)? {
        loaded.resources.push(typed(origin, kind, value.clone())?);
    }
    Ok(())
}

/// Which of our kinds a document is; `None` (with a note) for every other kind.
fn classify(origin: &Origin, api: &str, kind: &str, loaded: &mut Loaded) -> Result<Option<Kind>> {
    let ours = match kind {
        "AuthorizationPolicy" => Kind::AuthorizationPolicy,
        "RequestAuthentication" => Kind::RequestAuthentication,
        "PeerAuthentication" => Kind::PeerAuthentication,
        "" => bail!("{origin}: field `kind`: missing"),
        other => {
            loaded.notes.push(format!(
                "{origin}: skipped `{api}` `{other}` (not a security resource meshward evaluates)"
            ));
            return Ok(None);
        }
    };
    if api.starts_with("security.istio.io/") && !API_VERSIONS.contains(&api) {
        bail!(
            "{origin}: field `apiVersion`: `{api}` is not supported (use {})",
            API_VERSIONS.join(" or ")
        );
    }
    if !api.starts_with("security.istio.io/") {
        loaded.notes.push(format!(
            "{origin}: skipped `{api}` `{kind}` (not security.istio.io)"
        ));
        return Ok(None);
    }
    Ok(Some(ours))
}

fn typed<'de, D>(origin: &Origin, kind: Kind, de: D) -> Result<Resource>
where
    D: serde::Deserializer<'de>,
    D::Error: std::fmt::Display,
{
    fn parse<'de, S: DeserializeOwned, D>(origin: &Origin, de: D) -> Result<Document<S>>
    where
        D: serde::Deserializer<'de>,
        D::Error: std::fmt::Display,
    {
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            anyhow!("{origin}: field `{path}`: {}", e.into_inner())
        })
    }
    let (meta, spec) = match kind {
        Kind::AuthorizationPolicy => {
            let d: Document<AuthorizationPolicySpec> = parse(origin, de)?;
            (d.metadata, Spec::Authorization(d.spec.unwrap_or_default()))
        }
        Kind::RequestAuthentication => {
            let d: Document<RequestAuthenticationSpec> = parse(origin, de)?;
            (
                d.metadata,
                Spec::RequestAuthentication(d.spec.unwrap_or_default()),
            )
        }
        Kind::PeerAuthentication => {
            let d: Document<PeerAuthenticationSpec> = parse(origin, de)?;
            (d.metadata, Spec::Peer(d.spec.unwrap_or_default()))
        }
    };
    let resource = Resource {
        id: ResourceId {
            kind,
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            name: meta.name.clone(),
        },
        meta,
        origin: origin.clone(),
        spec,
    };
    validate(&resource).map_err(|e| anyhow!("{origin}: {}: {e}", resource.id))?;
    Ok(resource)
}

/// The checks Istio's admission webhook and CRD validation make on these fields (a resource the
/// cluster would refuse is an error here too), named by field path.
fn validate(r: &Resource) -> Result<()> {
    check_meta(&r.meta)?;
    match &r.spec {
        Spec::Authorization(s) => {
            if s.selector.is_some() && s.has_target_refs() {
                bail!("field `spec.selector`: cannot be combined with `targetRef`/`targetRefs`");
            }
            if s.target_ref.is_some() && !s.target_refs.is_empty() {
                bail!("field `spec.targetRef`: cannot be combined with `targetRefs`");
            }
            match (s.action, &s.provider) {
                (Action::Custom, None) => {
                    bail!("field `spec.provider`: required with `action: CUSTOM`")
                }
                (Action::Custom, Some(p)) if p.name.is_empty() => {
                    bail!("field `spec.provider.name`: must not be empty")
                }
                (a, Some(_)) if a != Action::Custom => {
                    bail!("field `spec.provider`: only allowed with `action: CUSTOM`")
                }
                _ => {}
            }
            for (i, rule) in s.rules.iter().enumerate() {
                for (j, c) in rule.when.iter().enumerate() {
                    if c.values.is_empty() && c.not_values.is_empty() {
                        bail!("field `spec.rules[{i}].when[{j}]`: needs `values` or `notValues`");
                    }
                }
                for (j, f) in rule.from.iter().enumerate() {
                    let s = &f.source;
                    let sa = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
                    let other = !s.principals.is_empty()
                        || !s.not_principals.is_empty()
                        || !s.namespaces.is_empty()
                        || !s.not_namespaces.is_empty();
                    if sa && other {
                        bail!(
                            "field `spec.rules[{i}].from[{j}].source.serviceAccounts`: cannot be \
                             combined with principals or namespaces"
                        );
                    }
                }
            }
        }
        Spec::RequestAuthentication(s) => {
            if s.selector.is_some() && s.has_target_refs() {
                bail!("field `spec.selector`: cannot be combined with `targetRef`/`targetRefs`");
            }
            for (i, rule) in s.jwt_rules.iter().enumerate() {
                if rule.issuer.is_empty() {
                    bail!("field `spec.jwtRules[{i}].issuer`: must not be empty");
                }
                if rule.jwks.is_some() && rule.jwks_uri.is_some() {
                    bail!("field `spec.jwtRules[{i}].jwks`: give only one of `jwks` and `jwksUri`");
                }
            }
        }
        Spec::Peer(s) => {
            let has_selector = s
                .selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty());
            if !s.port_level_mtls.is_empty() && !has_selector {
                bail!("field `spec.portLevelMtls`: needs a workload `selector` (Istio refuses port-level mTLS on namespace- and mesh-wide policies)");
            }
            for port in s.port_level_mtls.keys() {
                if *port == 0 || *port > 65535 {
                    bail!("field `spec.portLevelMtls.{port}`: not a port (1–65535)");
                }
            }
        }
    }
    Ok(())
}

fn check_meta(meta: &Metadata) -> Result<()> {
    if meta.name.is_empty() {
        bail!("field `metadata.name`: missing");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        load_text(Path::new("mesh.yaml"), text, &mut loaded)?;
        Ok(loaded)
    }

    #[test]
    fn multi_document_files_and_lists() {
        let loaded = load_str(
            "# leading comment\n\
             apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: a, namespace: ns}\nspec: {}\n\
             ---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n\
             ---\n\
             apiVersion: v1\nkind: List\nitems:\n\
             - apiVersion: security.istio.io/v1beta1\n  kind: PeerAuthentication\n  metadata: {name: p, namespace: ns}\n  spec: {mtls: {mode: STRICT}}\n\
             - apiVersion: security.istio.io/v1\n  kind: RequestAuthentication\n  metadata: {name: r}\n  spec: {jwtRules: [{issuer: i, jwks: '{}'}]}\n",
        )
        .unwrap();
        let ids: Vec<String> = loaded.resources.iter().map(|r| r.id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "AuthorizationPolicy ns/a",
                "PeerAuthentication ns/p",
                "RequestAuthentication default/r"
            ]
        );
        assert_eq!(loaded.resources[0].origin.line, 2);
        assert_eq!(loaded.resources[1].origin.item, Some(0));
        assert_eq!(loaded.notes.len(), 1);
        assert!(loaded.notes[0].contains("ConfigMap"), "{:?}", loaded.notes);
    }

    #[test]
    fn unknown_field_names_file_document_field_and_line() {
        let err = load_str(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: ns}\nspec: {}\n---\n\
             apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: b, namespace: ns}\nspec:\n  rules:\n  - from:\n    - source:\n        principal: [x]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("mesh.yaml: document 2 (line 6)"), "{err}");
        assert!(
            err.contains("field `spec.rules[0].from[0].source.principal`"),
            "{err}"
        );
        assert!(err.contains("unknown field `principal`"), "{err}");
        assert!(err.contains("line 13"), "{err}");
    }

    #[test]
    fn bad_enum_and_istio_validation_errors() {
        let err = load_str(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: ns}\nspec: {mtls: {mode: STRICTEST}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("field `spec.mtls.mode`"), "{err}");
        let err = load_str(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: c, namespace: ns}\nspec: {action: CUSTOM}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("AuthorizationPolicy ns/c: field `spec.provider`: required"),
            "{err}"
        );
        let err = load_str(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: ns}\nspec: {portLevelMtls: {8080: {mode: DISABLE}}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("field `spec.portLevelMtls`: needs a workload `selector`"),
            "{err}"
        );
        let err = load_str(
            "apiVersion: security.istio.io/v2\nkind: AuthorizationPolicy\nmetadata: {name: a}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("field `apiVersion`"), "{err}");
        let err = load_str(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata: {name: a}\n  spec: {rules: [{when: [{key: x}]}]}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("items[0]"), "{err}");
        assert!(err.contains("spec.rules[0].when[0]"), "{err}");
    }
}

#[cfg(test)]
mod port_keys {
    use super::*;

    /// `kubectl get -o yaml` writes map keys as strings (`"9090":`); people write `9090:`.
    #[test]
    fn port_level_mtls_takes_numeric_and_quoted_ports() {
        for key in ["9090", "\"9090\"", "'9090'"] {
            let mut loaded = Loaded::default();
            load_text(
                Path::new("p.yaml"),
                &format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p, namespace: ns}}\nspec:\n  selector: {{matchLabels: {{app: a}}}}\n  portLevelMtls:\n    {key}: {{mode: DISABLE}}\n"),
                &mut loaded,
            )
            .unwrap_or_else(|e| panic!("{key}: {e}"));
            let spec = loaded.resources[0].peer().unwrap();
            assert!(spec.port_level_mtls.contains_key(&9090), "{key}");
        }
    }
}
