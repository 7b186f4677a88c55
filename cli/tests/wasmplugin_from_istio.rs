//! `meshward wasmplugin --from-istio` as a user runs it: the workload's plugins as one
//! multi-document YAML on stdout (or -o), headed by the command line; the notes on stderr (the
//! TCP rules', the applied resources, unverified images); a CUSTOM policy refused with exit 2 and
//! nothing written; the two modes' flags kept apart. tests/tests/wasmplugin_from_istio.rs checks
//! the configs against the mesh scenario runner's and the CRD schema.

mod common;
use common::meshward;

const POSTGRES: [&str; 12] = [
    "wasmplugin",
    "--from-istio",
    "tests/fixtures/mesh-tcp/resources/",
    "--workload",
    "data/postgres",
    "--label",
    "app=postgres",
    "--tcp-port",
    "5432",
    "--tcp-port",
    "9187",
    "--image-prefix=oci://registry.example.com/meshward",
];

#[test]
fn a_tcp_workload_gets_its_http_and_network_plugins_and_the_tcp_notes() {
    let digest = "ab".repeat(32);
    let pin = format!("--digest=spiffe-authz-tcp=sha256:{digest}");
    let mut args = POSTGRES.to_vec();
    args.extend(["--tag", "0.1.0", &pin]);
    let (code, out, err) = meshward(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("# meshward wasmplugin --from-istio tests/fixtures/mesh-tcp/resources/ "),
        "{out}"
    );
    let docs: Vec<serde_yaml_ng::Value> = out
        .split("\n---\n")
        .map(|d| serde_yaml_ng::from_str(d).unwrap())
        .collect();
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "meshward-postgres-spiffe-authz",
            "meshward-postgres-spiffe-authz-tcp"
        ],
        "{out}"
    );
    let tcp = &docs[1]["spec"];
    assert_eq!(tcp["type"], "NETWORK");
    assert_eq!(
        tcp["url"],
        "oci://registry.example.com/meshward/spiffe-authz-tcp:0.1.0"
    );
    assert_eq!(tcp["sha256"].as_str(), Some(digest.as_str()));
    assert_eq!(tcp["match"][0]["ports"][1]["number"], 9187);
    // The rules the TCP filter cuts down, as `--filter spiffe-authz-tcp` prints them.
    assert!(
        err.contains("meshward: note: spiffe-authz-tcp: ")
            && err.contains("never matches")
            && err.contains("widens"),
        "{err}"
    );
    assert!(
        err.contains("meshward: note: data/postgres: from AuthorizationPolicy "),
        "{err}"
    );
    assert!(
        err.contains("meshward: note: no --digest for spiffe-authz: the proxy will not verify"),
        "{err}"
    );
    assert!(!err.contains("no --digest for spiffe-authz, "), "{err}");
}

#[test]
fn a_custom_policy_fails_the_command_naming_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.yaml");
    let base = [
        "wasmplugin",
        "--from-istio",
        "examples/mesh/resources/",
        "--workload",
        "payments/ledger",
        "--label",
        "app=ledger",
        "--image-prefix",
        "oci://registry.example.com/meshward",
        "--tag",
        "0.1.0",
        "-o",
        file.to_str().unwrap(),
    ];
    let (code, out, err) = meshward(&base);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("meshward: workload payments/ledger: AuthorizationPolicy payments/ext-authz-payouts (CUSTOM, provider `ext-authz-opa`) applies to the workload, and cannot be deployed as tested")
            && err.contains("Istio's own CUSTOM enforcement keeps doing that")
            && err.contains("--leave-custom-to-istio"),
        "{err}"
    );
    assert!(out.is_empty() && !file.exists());

    let mut args = base.to_vec();
    args.push("--leave-custom-to-istio");
    let (code, out, err) = meshward(&args);
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("# meshward wasmplugin --from-istio "),
        "{text}"
    );
    assert_eq!(text.matches("kind: WasmPlugin").count(), 2, "{text}");
    assert!(
        text.contains("name: meshward-ledger-jwt-authn")
            && text.contains("name: meshward-ledger-spiffe-authz"),
        "{text}"
    );
    assert!(
        err.contains("stays with Istio") && err.contains("`outbound|443||idp.example.com`"),
        "{err}"
    );
}

#[test]
fn the_two_modes_do_not_mix_and_from_istio_says_what_it_needs() {
    let cases: [(&[&str], &str); 8] = [
        (
            &[
                "wasmplugin",
                "--filter",
                "spiffe-authz",
                "--from-istio",
                "examples/mesh/resources/",
            ],
            "cannot be used with",
        ),
        (
            &[
                "wasmplugin",
                "--filter",
                "spiffe-authz-tcp",
                "--policy",
                "policies/spiffe-authz/tcp-postgres.json",
                "--image",
                "oci://registry.example.com/meshward/spiffe-authz-tcp:0.1.0",
                "--tcp-port",
                "5432",
            ],
            "error: the argument '--tcp-port <PORT>' cannot be used with:",
        ),
        (
            &["wasmplugin", "--workload", "data/postgres"],
            "  --from-istio <PATH>...\n",
        ),
        (
            &["wasmplugin", "--from-istio", "examples/mesh/resources/"],
            "meshward: --from-istio needs --workload NAMESPACE/SERVICEACCOUNT",
        ),
        (
            &[
                "wasmplugin",
                "--from-istio",
                "examples/mesh/resources/",
                "--workload",
                "payments/ledger",
                "--label",
                "app=ledger",
            ],
            "meshward: --from-istio needs --image-prefix oci://HOST/REPO",
        ),
        (
            &[
                "wasmplugin",
                "--from-istio",
                "tests/fixtures/mesh-tcp/resources/",
                "--workload",
                "data/postgres",
                "--image-prefix",
                "oci://registry.example.com/meshward",
                "--tag",
                "1",
            ],
            "needs the workload's labels",
        ),
        (&POSTGRES, "give --tag, or --digest spiffe-authz=<WasmPlugin sha256>"),
        (
            &[
                "wasmplugin",
                "--from-istio",
                "tests/fixtures/mesh-tcp/resources/",
                "--workload",
                "data/postgres",
                "--label",
                "app=postgres",
                "--image-prefix",
                "oci://registry.example.com/meshward/spiffe-authz:1",
                "--tag",
                "1",
            ],
            "--image-prefix oci://registry.example.com/meshward/spiffe-authz:1: expected oci://HOST/REPO",
        ),
    ];
    for (args, want) in cases {
        let (code, out, err) = meshward(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
}

#[test]
fn help_explains_from_istio() {
    let (code, out, _) = meshward(&["wasmplugin", "--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--from-istio <PATH>",
        "--workload <NS/SA>",
        "--label <KEY=VALUE>",
        "--tcp-port <PORT>",
        "--http-port <PORT>",
        "--image-prefix <oci://HOST/REPO>",
        "--tag <TAG>",
        "--digest <FILTER=DIGEST>",
        "--root-namespace <NS>",
        "--leave-custom-to-istio",
        "--name-prefix <PREFIX>",
        "<PREFIX>/<filter>:<tag>",
    ] {
        assert!(out.contains(flag), "{flag}:\n{out}");
    }
    assert!(
        out.contains("meshward wasmplugin --from-istio <PATH>... --workload <NS/SA>"),
        "{out}"
    );
}

/// A mesh scenario file alone stands for its resources, workload, labels and TCP ports: the
/// output is the one the explicit flags give, and the flags cannot be mixed in.
#[test]
fn a_mesh_scenario_file_gives_the_workload_it_tests() {
    let tag = ["--tag", "0.1.0"];
    let mut explicit = POSTGRES.to_vec();
    explicit.extend(tag);
    let (code, want, err) = meshward(&explicit);
    assert_eq!(code, 0, "{err}");
    let (code, got, err_s) = meshward(&[
        "wasmplugin",
        "--from-istio",
        "tests/scenarios/mesh-tcp/postgres.yaml",
        "--image-prefix=oci://registry.example.com/meshward",
        "--tag",
        "0.1.0",
    ]);
    assert_eq!(code, 0, "{err_s}");
    // Past the first line, which repeats the command.
    let body = |s: &str| {
        s.split_once('\n')
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    };
    assert!(got
        .starts_with("# meshward wasmplugin --from-istio tests/scenarios/mesh-tcp/postgres.yaml"));
    assert_eq!(
        body(&got),
        body(&want),
        "the scenario's workload renders as the explicit flags do"
    );
    assert!(got.contains("type: NETWORK"), "{got}");
    assert_eq!(err_s, err, "the same notes");
    let (code, out, err) = meshward(&[
        "wasmplugin",
        "--from-istio",
        "tests/scenarios/mesh-tcp/postgres.yaml",
        "--workload",
        "data/postgres",
        "--image-prefix=oci://registry.example.com/meshward",
        "--tag",
        "0.1.0",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("a mesh scenario file gives the workload, its labels and its TCP ports"),
        "{err}"
    );
}
