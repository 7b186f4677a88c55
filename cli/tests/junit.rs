//! `meshward test --junit FILE` and `--shard I/N`, as a CI job uses them: the report validates
//! against a JUnit XML schema (tests/fixtures/junit/junit.xsd, checked by Debian's xmllint, an
//! independent validator), holds one testcase per case with the diff as the failure, and the
//! shards 1/3, 2/3 and 3/3 together run every case exactly once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use quick_junit::Report;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn meshward(args: &[String]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshward"))
        .args(args)
        .env("MESHWARD_WASM_DIR", meshward_rig::default_wasm_dir(&repo()))
        .output()
        .expect("run meshward");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Harness-only scenario files from three folders, plus one file with a wrong expectation.
fn suite(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for folder in ["header-limits", "codec", "rate-limit"] {
        for e in std::fs::read_dir(repo().join("tests/scenarios").join(folder)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p.display().to_string());
            }
        }
    }
    let wrong = dir.join("wrong.yaml");
    std::fs::write(
        &wrong,
        format!(
            "chain: [{{module: {}}}]\ncases:\n  - name: \"passes <&> \\\"quoted\\\"\"\n    request: {{path: /}}\n    expect: {{status: 200}}\n  - name: expects the wrong status\n    request: {{path: /}}\n    expect: {{status: 418}}\n",
            meshward_rig::default_wasm_dir(&repo())
                .join("meshward_test_noop.wasm")
                .display()
        ),
    )
    .unwrap();
    files.push(wrong.display().to_string());
    files
}

fn validate(xml: &Path) {
    let schema = repo().join("tests/fixtures/junit/junit.xsd");
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(xml)
        .output()
        .expect("xmllint (Debian libxml2-utils; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "{} does not validate:\n{}",
        xml.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (suite, case) ⇒ the failure message, for every testcase in the report.
fn cases(xml: &Path) -> BTreeMap<(String, String), Option<String>> {
    let text = std::fs::read_to_string(xml).unwrap();
    let report = Report::deserialize_from_str(&text).expect("the report parses");
    let mut out = BTreeMap::new();
    let mut total = 0;
    for suite in &report.test_suites {
        assert_eq!(
            suite.tests,
            suite.test_cases.len(),
            "{}",
            suite.name.as_str()
        );
        for case in &suite.test_cases {
            let failure = match &case.status {
                quick_junit::TestCaseStatus::Success { .. } => None,
                quick_junit::TestCaseStatus::NonSuccess { message, .. } => Some(
                    message
                        .as_ref()
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_default(),
                ),
                other => panic!("unexpected status {other:?}"),
            };
            total += 1;
            let key = (
                suite.name.as_str().to_string(),
                case.name.as_str().to_string(),
            );
            assert!(
                out.insert(key.clone(), failure).is_none(),
                "{key:?} twice in one report"
            );
        }
    }
    assert_eq!(report.tests, total);
    out
}

#[test]
fn junit_report_validates_and_shards_run_every_case_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let files = suite(dir.path());
    let whole = dir.path().join("all.xml");
    let mut args = vec![
        "test".to_string(),
        "--junit".into(),
        whole.display().to_string(),
    ];
    args.extend(files.iter().cloned());
    let (code, out) = meshward(&args);
    assert_eq!(code, 1, "one case fails on purpose:\n{out}");
    validate(&whole);
    let all = cases(&whole);
    assert!(all.len() > 100, "{} cases", all.len());
    let failed: Vec<_> = all.iter().filter(|(_, f)| f.is_some()).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let ((_, name), message) = failed[0];
    assert_eq!(name, "expects the wrong status");
    let message = message.as_deref().unwrap();
    assert!(message.contains("expected: 418"), "{message}");
    assert!(message.contains("actual:   200"), "{message}");
    assert!(all.keys().any(|(_, n)| n == "passes <&> \"quoted\""));

    let mut union = BTreeMap::new();
    for i in 1..=3 {
        let xml = dir.path().join(format!("shard{i}.xml"));
        // Each shard gets the files in another order: the split must not depend on it.
        let mut shuffled = files.clone();
        shuffled.rotate_left(i * 5 % files.len());
        let mut args = vec![
            "test".to_string(),
            "--shard".into(),
            format!("{i}/3"),
            "--junit".into(),
            xml.display().to_string(),
        ];
        args.extend(shuffled);
        let (_, out) = meshward(&args);
        assert!(out.contains(&format!("shard {i}/3:")), "{out}");
        validate(&xml);
        let shard = cases(&xml);
        assert!(!shard.is_empty(), "shard {i} ran nothing");
        for (k, v) in shard {
            assert!(
                union.insert(k.clone(), v).is_none(),
                "{k:?} ran in two shards"
            );
        }
    }
    assert_eq!(union, all, "the shards together differ from the whole run");
}

#[test]
fn bad_shard_values_are_refused() {
    let (code, out) = meshward(&[
        "test".into(),
        "--shard".into(),
        "4/3".into(),
        "x.yaml".into(),
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("1 ≤ I ≤ N"), "{out}");
}
