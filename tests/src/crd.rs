//! The Istio CRD schemas of `../shared/reference/istio-crds-subset.yaml` as strict JSON Schemas,
//! for the suites that check shipped YAML against what a cluster would accept
//! (tests/examples.rs and tests/wasmplugin_from_istio.rs: WasmPlugin; tests/mesh.rs: the security
//! resources of the example mesh and the mesh suites).

use serde::Deserialize;
use serde_json::{json, Value as Json};
use serde_yaml_ng::Value as Yaml;

use crate::repo;

/// The `openAPIV3Schema` of `version` of the CRD named `crd`, made strict ([`strict`]).
pub fn crd_schema(crd: &str, version: &str) -> Json {
    let path = repo().join("../shared/reference/istio-crds-subset.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the Istio CRD reference must sit beside the repository)",
            path.display()
        )
    });
    let doc = serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|doc| Yaml::deserialize(doc).ok())
        .find(|doc| doc["metadata"]["name"].as_str() == Some(crd))
        .unwrap_or_else(|| panic!("the {crd} CRD in the reference file"));
    let version = doc["spec"]["versions"]
        .as_sequence()
        .and_then(|vs| vs.iter().find(|v| v["name"].as_str() == Some(version)))
        .unwrap_or_else(|| panic!("{crd} {version}"));
    let mut schema: Json = serde_json::to_value(&version["schema"]["openAPIV3Schema"])
        .unwrap_or_else(|e| panic!("{crd}: {e}"));
    strict(&mut schema);
    schema
}

/// OpenAPI v3 (Kubernetes structural schema) → JSON Schema: `nullable`, int32 bounds, and no
/// unknown fields.
pub fn strict(schema: &mut Json) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if object.remove("nullable") == Some(json!(true)) {
        if let Some(Json::String(t)) = object.get("type").cloned() {
            object.insert("type".into(), json!([t, "null"]));
        }
    }
    if object.get("format") == Some(&json!("int32")) {
        object.insert("minimum".into(), json!(i32::MIN));
        object.insert("maximum".into(), json!(i32::MAX));
    }
    let preserve = object.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if object.contains_key("properties") && !preserve {
        object.insert("additionalProperties".into(), json!(false));
    }
    for (key, value) in object.iter_mut() {
        match key.as_str() {
            "properties" => value
                .as_object_mut()
                .into_iter()
                .flat_map(|p| p.values_mut())
                .for_each(strict),
            "items" | "additionalProperties" => strict(value),
            _ => {}
        }
    }
}

/// Err(every violation) if `instance` does not satisfy `schema`.
pub fn validate(schema: &Json, instance: &Json) -> Result<(), String> {
    let validator = jsonschema::validator_for(schema).expect("a valid JSON Schema");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("at `{}`: {e}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// The WasmPlugin v1alpha1 openAPIV3Schema of Istio's CRD, made strict for the test: Kubernetes
/// silently prunes unknown fields, so a misspelled `failStratgy` would be dropped rather than
/// refused; here every object without `x-kubernetes-preserve-unknown-fields` refuses them.
pub fn wasmplugin_schema() -> Json {
    let mut schema = crd_schema("wasmplugins.extensions.istio.io", "v1alpha1");
    let props = schema["properties"].as_object_mut().unwrap();
    props.insert(
        "apiVersion".into(),
        json!({"const": "extensions.istio.io/v1alpha1"}),
    );
    props.insert("kind".into(), json!({"const": "WasmPlugin"}));
    props.insert(
        "metadata".into(),
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
                "namespace": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
                "labels": {"type": "object"},
                "annotations": {"type": "object"}
            },
            "additionalProperties": false
        }),
    );
    schema["required"] = json!(["apiVersion", "kind", "metadata", "spec"]);
    schema
}
