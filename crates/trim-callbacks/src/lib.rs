//! Drops the proxy-wasm callback exports a filter module does not handle.
//!
//! # Why
//!
//! The proxy-wasm Rust SDK exports every callback of ABI 0.2.1 from every module, whatever the
//! filter implements. Envoy (proxy-wasm-cpp-host `ContextBase::onResponseHeaders`, `onLog`,
//! `onDone`, …) enters the VM for each callback the module exports and skips the ones it does not:
//! for a filter that only looks at request headers, the SDK's response-headers, response-body,
//! log and done callbacks are four VM entries per request that do nothing. This crate removes
//! them after the link, from the export section only (the code stays; nothing else changes).
//!
//! # What a module keeps
//!
//! A filter lists the callbacks it handles with `meshward_host::callbacks!`, which puts their
//! names in a custom section, [`SECTION`], one per line. Of the event callbacks in [`EVENTS`],
//! exactly those listed stay exported; every other export (the allocator, `proxy_on_context_create`,
//! `proxy_on_vm_start`, `proxy_on_configure`, `proxy_on_delete`, the ABI version marker,
//! `_initialize`, memory) is untouched. A module without the section, or one that lists a name that
//! is not an event callback, is an error: trimming on a guess could silence a callback a filter
//! relies on.

use std::collections::BTreeSet;

/// The custom section in which a module lists the callbacks it handles, one name per line.
pub const SECTION: &str = "meshward.callbacks";

/// The ABI 0.2.1 event callbacks Envoy skips when a module does not export them (cpp-host
/// `ContextBase`: each checks for the export first and answers as a no-op would: `Continue`,
/// `true` for `onDone`, nothing for the rest).
pub const EVENTS: &[&str] = &[
    "proxy_on_tick",
    "proxy_on_queue_ready",
    "proxy_on_foreign_function",
    "proxy_on_http_call_response",
    "proxy_on_grpc_receive_initial_metadata",
    "proxy_on_grpc_receive",
    "proxy_on_grpc_receive_trailing_metadata",
    "proxy_on_grpc_close",
    "proxy_on_new_connection",
    "proxy_on_downstream_data",
    "proxy_on_upstream_data",
    "proxy_on_downstream_connection_close",
    "proxy_on_upstream_connection_close",
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_request_metadata",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_response_metadata",
    "proxy_on_log",
    "proxy_on_done",
];

/// A trimmed module and what was done to it.
#[derive(Debug)]
pub struct Trimmed {
    pub wasm: Vec<u8>,
    /// The callbacks the module lists (and keeps, where it exports them).
    pub handled: BTreeSet<String>,
    /// The event callbacks whose exports were removed, in export order.
    pub removed: Vec<String>,
}

/// Removes every export named in [`EVENTS`] that the module's [`SECTION`] does not list.
/// Idempotent: a trimmed module comes back unchanged.
pub fn trim(wasm: &[u8]) -> Result<Trimmed, String> {
    trim_to(wasm, handled(wasm)?)
}

/// Removes every export named in [`EVENTS`] except those in `keep`, whatever the module lists
/// (`meshward bench envoy` derives its callback floor from the SDK's no-op module this way).
pub fn keep_only(wasm: &[u8], keep: &[&str]) -> Result<Trimmed, String> {
    if let Some(name) = keep.iter().find(|name| !EVENTS.contains(name)) {
        return Err(format!(
            "{name:?} is not an event callback of proxy-wasm ABI 0.2.1"
        ));
    }
    trim_to(wasm, keep.iter().map(|name| name.to_string()).collect())
}

fn trim_to(wasm: &[u8], handled: BTreeSet<String>) -> Result<Trimmed, String> {
    let mut module = wasm_encoder::Module::new();
    let mut removed = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| format!("not a wasm module: {e}"))?;
        match &payload {
            wasmparser::Payload::ExportSection(reader) => {
                let mut exports = wasm_encoder::ExportSection::new();
                for export in reader.clone() {
                    let export = export.map_err(|e| format!("export section: {e}"))?;
                    if EVENTS.contains(&export.name) && !handled.contains(export.name) {
                        removed.push(export.name.to_string());
                        continue;
                    }
                    exports.export(export.name, export_kind(export.kind)?, export.index);
                }
                module.section(&exports);
            }
            wasmparser::Payload::Version {
                encoding: wasmparser::Encoding::Component,
                ..
            } => return Err("a component, not a core module".to_string()),
            other => {
                // Every other section is copied byte for byte.
                if let Some((id, range)) = other.as_section() {
                    let data = wasm
                        .get(range)
                        .ok_or_else(|| "a section runs past the end of the module".to_string())?;
                    module.section(&wasm_encoder::RawSection { id, data });
                }
            }
        }
    }
    Ok(Trimmed {
        wasm: module.finish(),
        handled,
        removed,
    })
}

/// The names listed in the module's [`SECTION`] (several sections of that name are one list, as
/// the linker concatenates them).
pub fn handled(wasm: &[u8]) -> Result<BTreeSet<String>, String> {
    let mut found = false;
    let mut names = BTreeSet::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| format!("not a wasm module: {e}"))?;
        let wasmparser::Payload::CustomSection(section) = payload else {
            continue;
        };
        if section.name() != SECTION {
            continue;
        }
        found = true;
        let text = std::str::from_utf8(section.data())
            .map_err(|_| format!("custom section {SECTION} is not UTF-8"))?;
        for name in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !EVENTS.contains(&name) {
                return Err(format!(
                    "custom section {SECTION} lists {name:?}, which is not an event callback of \
                     proxy-wasm ABI 0.2.1 (one of {})",
                    EVENTS.join(", ")
                ));
            }
            names.insert(name.to_string());
        }
    }
    if !found {
        return Err(format!(
            "no custom section {SECTION}: the module does not say which callbacks it handles \
             (meshward_host::callbacks!)"
        ));
    }
    Ok(names)
}

/// The event callbacks ([`EVENTS`]) the module exports, in export order.
pub fn event_exports(wasm: &[u8]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| format!("not a wasm module: {e}"))?;
        if let wasmparser::Payload::ExportSection(reader) = payload {
            for export in reader {
                let export = export.map_err(|e| format!("export section: {e}"))?;
                if EVENTS.contains(&export.name) {
                    names.push(export.name.to_string());
                }
            }
        }
    }
    Ok(names)
}

fn export_kind(kind: wasmparser::ExternalKind) -> Result<wasm_encoder::ExportKind, String> {
    Ok(match kind {
        wasmparser::ExternalKind::Func => wasm_encoder::ExportKind::Func,
        wasmparser::ExternalKind::Table => wasm_encoder::ExportKind::Table,
        wasmparser::ExternalKind::Memory => wasm_encoder::ExportKind::Memory,
        wasmparser::ExternalKind::Global => wasm_encoder::ExportKind::Global,
        wasmparser::ExternalKind::Tag => wasm_encoder::ExportKind::Tag,
        other => {
            return Err(format!(
                "an export of kind {other:?}, which filters do not have"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(section: Option<&str>) -> Vec<u8> {
        let custom = section
            .map(|s| format!("(@custom \"{SECTION}\" \"{}\")", s.replace('\n', "\\n")))
            .unwrap_or_default();
        wat::parse_str(format!(
            r#"(module
                {custom}
                (memory (export "memory") 1)
                (func $f (param i32 i32 i32) (result i32) i32.const 0)
                (func $g (param i32) (result i32) i32.const 1)
                (func $h (param i32))
                (export "proxy_on_request_headers" (func $f))
                (export "proxy_on_response_headers" (func $f))
                (export "proxy_on_done" (func $g))
                (export "proxy_on_log" (func $h))
                (export "proxy_on_delete" (func $h))
                (export "proxy_on_memory_allocate" (func $g)))"#
        ))
        .unwrap()
    }

    fn exports(wasm: &[u8]) -> Vec<String> {
        wasmparser::Parser::new(0)
            .parse_all(wasm)
            .filter_map(|p| match p.unwrap() {
                wasmparser::Payload::ExportSection(r) => Some(
                    r.into_iter()
                        .map(|e| e.unwrap().name.to_string())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn keeps_listed_callbacks_and_every_non_event_export() {
        let t = trim(&module(Some("proxy_on_request_headers\n"))).unwrap();
        assert_eq!(
            exports(&t.wasm),
            [
                "memory",
                "proxy_on_request_headers",
                "proxy_on_delete",
                "proxy_on_memory_allocate"
            ]
        );
        assert_eq!(
            t.removed,
            ["proxy_on_response_headers", "proxy_on_done", "proxy_on_log"]
        );
        // Still a valid module, with its custom section and code intact.
        wasmparser::Validator::new().validate_all(&t.wasm).unwrap();
        assert_eq!(handled(&t.wasm).unwrap().len(), 1);
    }

    #[test]
    fn keep_only_ignores_the_section_and_checks_its_names() {
        let t = keep_only(&module(None), &["proxy_on_log"]).unwrap();
        assert_eq!(
            t.removed,
            [
                "proxy_on_request_headers",
                "proxy_on_response_headers",
                "proxy_on_done"
            ]
        );
        assert!(keep_only(&module(None), &["proxy_on_delete"]).is_err());
    }

    #[test]
    fn trimming_twice_changes_nothing() {
        let once = trim(&module(Some("proxy_on_request_headers\nproxy_on_log"))).unwrap();
        let twice = trim(&once.wasm).unwrap();
        assert_eq!(once.wasm, twice.wasm);
        assert!(twice.removed.is_empty());
    }

    #[test]
    fn sections_concatenated_by_the_linker_are_one_list() {
        let wasm = module(Some(
            "proxy_on_request_headers\nproxy_on_response_headers\n",
        ));
        let t = trim(&wasm).unwrap();
        assert_eq!(t.removed, ["proxy_on_done", "proxy_on_log"]);
    }

    #[test]
    fn refuses_a_module_that_does_not_say_what_it_handles() {
        let err = trim(&module(None)).unwrap_err();
        assert!(
            err.contains("no custom section meshward.callbacks"),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_name_that_is_not_an_event_callback() {
        // A typo would otherwise drop the callback the filter meant to keep.
        let err = trim(&module(Some("proxy_on_request_header"))).unwrap_err();
        assert!(err.contains("\"proxy_on_request_header\""), "{err}");
        let err = trim(&module(Some("proxy_on_delete"))).unwrap_err();
        assert!(err.contains("not an event callback"), "{err}");
    }
}
