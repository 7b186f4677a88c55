//! meshward-oci (and `meshward image`): push and pull against a real registry (Debian's `docker-registry`, distribution v2) on
//! loopback, checked with an independent client (`skopeo`) and with Istio's rules.
//!
//! Both tools are required (scripts/setup.sh installs them): a missing one fails the tests.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use meshward_cli::image::{run, ImageCommand, RegistryArgs};
use meshward_oci::istio::{Outcome, Variant};
use meshward_oci::media;
use meshward_oci::report::{judge, render_report};
use meshward_oci::spec::{sha256_digest, Descriptor, ImageManifest};
use meshward_oci::{build, push, verify, Format, ImageRef, RegistryOptions};

/// The registry exits on its own after this long even if the test process dies.
const REGISTRY_LIFETIME_SECS: &str = "900";

fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("`{name}` is required for the OCI tests: run scripts/setup.sh"))
}

/// A registry on 127.0.0.1:<free port> with storage in a temp dir; stopped on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let binary = tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        // `timeout` bounds its life; SIGTERM to `timeout` (see Drop) is passed on to it.
        let child = Command::new(tool("timeout"))
            .arg(REGISTRY_LIFETIME_SECS)
            .arg(&binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let registry = Registry { child, port, dir };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                let mut resp = String::new();
                let _ = s.read_to_string(&mut resp);
                if resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        panic!(
            "docker-registry did not answer /v2/ on port {}: {log}",
            self.port
        );
    }

    fn url(&self, repo_tag: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo_tag}", self.port)
    }

    fn docker(&self, repo_tag: &str) -> String {
        format!("docker://127.0.0.1:{}/{repo_tag}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let polite = Command::new("kill").args(["-TERM", &pid]).status();
        if !matches!(polite, Ok(s) if s.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn options() -> RegistryOptions {
    RegistryOptions {
        insecure: true,
        // Never pick up the developer's real credentials.
        docker_config: Some(PathBuf::from("/nonexistent/meshward-test/config.json")),
        ..RegistryOptions::default()
    }
}

fn skopeo(args: &[&str]) -> Output {
    let out = Command::new(tool("skopeo")).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A valid module of about `size` bytes: the 8-byte header plus one custom section of
/// filler, so that layers are big enough to be chunked and compressed for real.
fn module_of_size(size: usize) -> Vec<u8> {
    let payload_len = size.saturating_sub(16);
    let mut section = vec![0u8]; // name: empty
    section.extend((0..payload_len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    wasm.push(0); // custom section id
    leb128(section.len(), &mut wasm);
    wasm.extend(section);
    wasm
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn both_formats_push_and_istio_rules_yield_the_identical_module() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let wasm = module_of_size(300_000);
    let wasm_file = write_temp(work.path(), "filter.wasm", &wasm);
    push_both_formats_and_check(&registry, &wasm, &wasm_file, "meshward/synthetic");
}

/// The four filters and spiffe-authz-tcp (the network filter) as `scripts/build-wasm.sh` builds
/// them, each pushed in both formats.
#[test]
fn every_filter_pushes_in_both_formats_and_istio_loads_the_very_same_bytes() {
    let registry = Registry::start();
    for stem in [
        "header_limits",
        "spiffe_authz",
        "jwt_authn",
        "rate_limit",
        "spiffe_authz_tcp",
    ] {
        let wasm_file = filter_wasm(stem);
        let wasm = std::fs::read(&wasm_file).unwrap();
        let repo_base = format!("meshward/{}", stem.replace('_', "-"));
        push_both_formats_and_check(&registry, &wasm, &wasm_file, &repo_base);
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(1)
        .unwrap()
        .to_path_buf()
}

/// A filter's release module (`scripts/build-wasm.sh` must have run).
fn filter_wasm(stem: &str) -> PathBuf {
    let p = meshward_rig::default_wasm_dir(&workspace_root()).join(format!("{stem}.wasm"));
    assert!(
        p.is_file(),
        "{} missing: run scripts/build-wasm.sh",
        p.display()
    );
    p
}

/// Pushes `wasm` as `<repo_base>:compat` and `<repo_base>:module`; checks each with skopeo (the
/// manifest the registry serves, its layer types) and with Istio's rules (which module loads,
/// the WasmPlugin sha256).
fn push_both_formats_and_check(
    registry: &Registry,
    wasm: &[u8],
    wasm_file: &Path,
    repo_base: &str,
) {
    for (format, repo, variant, layer_types) in [
        (
            Format::Compat,
            &format!("{repo_base}:compat"),
            Variant::OciCompat,
            vec![media::OCI_LAYER_TAR_GZIP],
        ),
        (
            Format::OciModule,
            &format!("{repo_base}:module"),
            Variant::OciModule,
            vec![media::WASM_MODULE_CONFIG, media::WASM_MODULE_LAYER],
        ),
    ] {
        let image = build(wasm, format).unwrap();
        let reference = ImageRef::parse(&registry.url(repo)).unwrap();
        let pushed = push(&image, &reference, &options()).unwrap();
        assert_eq!(pushed.registry_digest, image.manifest_digest());

        // Independent client: the registry serves exactly our manifest, with these types.
        let raw = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &registry.docker(repo),
        ])
        .stdout;
        assert_eq!(sha256_digest(&raw), image.manifest_digest());
        let manifest: ImageManifest = serde_json::from_slice(&raw).unwrap();
        assert_eq!(manifest.schema_version, 2);
        assert_eq!(manifest.media_type.as_deref(), Some(media::OCI_MANIFEST));
        let types: Vec<&str> = manifest
            .layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect();
        assert_eq!(types, layer_types, "{format:?}");

        // Istio's rules accept it and load the very same bytes.
        let report = verify(&reference, &options(), None).unwrap();
        match &report.outcome {
            Outcome::Load(l) => {
                assert_eq!(l.variant, variant);
                assert!(l.wasm == wasm, "{format:?}: loaded module differs");
            }
            Outcome::Reject(r) => panic!("{format:?} rejected: {r}"),
        }
        assert_eq!(report.manifest_digest, Some(image.manifest_digest()));
        judge(&report, Some(wasm_file)).unwrap();
        let text = render_report(&report);
        assert!(text.contains(&image.wasmplugin_sha256()), "{text}");

        // The WasmPlugin sha256 check: manifest digest passes, the module hash does not.
        let ok = verify(&reference, &options(), Some(&image.wasmplugin_sha256())).unwrap();
        assert!(matches!(ok.outcome, Outcome::Load(_)));
        let wrong = verify(&reference, &options(), Some(&image.module_sha256)).unwrap();
        assert!(matches!(&wrong.outcome, Outcome::Reject(r) if r.contains("does not match")));
        // A digest-pinned url checks the same digest with no sha256 given.
        let pinned = reference.pinned(&image.manifest_digest());
        assert!(matches!(
            verify(&pinned, &options(), None).unwrap().outcome,
            Outcome::Load(_)
        ));
    }
}

/// Reproducibility from source: two clean builds of a filter (same command, fresh target
/// directories) give the same bytes, hence the same pushed digest. (A filter built alone and
/// the same filter built with the others can differ: Cargo unifies dependency features across
/// the packages of one build. `scripts/build-wasm.sh` always builds the same set.)
#[test]
fn the_same_filter_built_twice_from_clean_pushes_the_same_digest() {
    let registry = Registry::start();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut digests = Vec::new();
    let mut modules = Vec::new();
    for run in 0..2 {
        let target = tempfile::tempdir().unwrap();
        let status = Command::new(&cargo)
            .args(["build", "--release", "--target", "wasm32-wasip1", "--quiet"])
            .args(["--locked", "--offline", "-p", "header-limits"])
            .env("CARGO_TARGET_DIR", target.path())
            .current_dir(workspace_root())
            .status()
            .unwrap();
        assert!(status.success(), "build {run} failed");
        let wasm = std::fs::read(
            target
                .path()
                .join("wasm32-wasip1/release/header_limits.wasm"),
        )
        .unwrap();
        let image = build(&wasm, Format::Compat).unwrap();
        let tag = format!("repro/header-limits:build{run}");
        let pushed = push(
            &image,
            &ImageRef::parse(&registry.url(&tag)).unwrap(),
            &options(),
        )
        .unwrap();
        digests.push(pushed.registry_digest);
        modules.push(wasm);
    }
    assert!(modules[0] == modules[1], "two clean builds differ");
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn compat_layer_unpacks_with_standard_tools() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let wasm = module_of_size(50_000);
    let image = build(&wasm, Format::Compat).unwrap();
    let reference = ImageRef::parse(&registry.url("meshward/unpack:v1")).unwrap();
    push(&image, &reference, &options()).unwrap();

    // skopeo fetches the blobs, GNU tar unpacks the layer: plugin.wasm is the module.
    let copy = work.path().join("copy");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &registry.docker("meshward/unpack:v1"),
        &format!("dir:{}", copy.display()),
    ]);
    let layer_hex = image.layers[0]
        .descriptor
        .digest
        .trim_start_matches("sha256:");
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let status = Command::new(tool("tar"))
        .arg("-xzf")
        .arg(copy.join(layer_hex))
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(std::fs::read(unpacked.join("plugin.wasm")).unwrap() == wasm);
    // And the config is a plain image config skopeo can summarise.
    let config = skopeo(&[
        "inspect",
        "--config",
        "--tls-verify=false",
        &registry.docker("meshward/unpack:v1"),
    ])
    .stdout;
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
}

#[test]
fn the_same_module_built_twice_pushes_the_same_digest() {
    let registry = Registry::start();
    let wasm = module_of_size(20_000);
    for format in [Format::Compat, Format::OciModule] {
        let first = build(&wasm, format).unwrap();
        let second = build(&wasm.clone(), format).unwrap();
        let a = push(
            &first,
            &ImageRef::parse(&registry.url("repro/a:1")).unwrap(),
            &options(),
        )
        .unwrap();
        let b = push(
            &second,
            &ImageRef::parse(&registry.url("repro/b:1")).unwrap(),
            &options(),
        )
        .unwrap();
        assert_eq!(a.registry_digest, b.registry_digest, "{format:?}");
        // Re-pushing to the same repository uploads nothing new.
        let again = push(
            &second,
            &ImageRef::parse(&registry.url("repro/a:2")).unwrap(),
            &options(),
        )
        .unwrap();
        assert_eq!(again.uploaded_blobs, 0);
        assert_eq!(again.registry_digest, a.registry_digest);
    }
}

#[test]
fn a_single_module_layer_is_rejected_as_istio_would() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let wasm = module_of_size(1_000);
    // The CNCF-ish shape Istio does not take: one raw module layer.
    let mut image = build(&wasm, Format::OciModule).unwrap();
    image.layers.remove(0);
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.to_owned()),
        config: Some(image.config.descriptor.clone()),
        layers: vec![Descriptor::of(media::WASM_MODULE_LAYER, &wasm)],
        annotations: None,
    };
    image.manifest = serde_json::to_vec(&manifest).unwrap();
    let url = registry.url("meshward/single:v1");
    push(&image, &ImageRef::parse(&url).unwrap(), &options()).unwrap();

    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &registry.docker("meshward/single:v1"),
    ])
    .stdout;
    let seen: ImageManifest = serde_json::from_slice(&raw).unwrap();
    assert_eq!(seen.layers.len(), 1);

    let report = verify(&ImageRef::parse(&url).unwrap(), &options(), None).unwrap();
    let Outcome::Reject(reason) = &report.outcome else {
        panic!("single module layer accepted: {report:?}");
    };
    assert!(
        reason.contains("could not parse as compat variant: invalid media type"),
        "{reason}"
    );
    assert!(
        reason.contains("number of layers must be 2 but got 1"),
        "{reason}"
    );
    assert!(judge(&report, None).is_err());

    // The CLI path exits non-zero on the reject, and on a module that differs.
    let cli = run(ImageCommand::Verify {
        target: url,
        expect_wasm: None,
        sha256: None,
        registry: RegistryArgs {
            insecure: true,
            ..RegistryArgs::default()
        },
    });
    assert!(cli.is_err());
    let good = build(&wasm, Format::Compat).unwrap();
    let good_url = registry.url("meshward/good:v1");
    push(&good, &ImageRef::parse(&good_url).unwrap(), &options()).unwrap();
    let other = write_temp(work.path(), "other.wasm", &module_of_size(1_001));
    let mismatch = run(ImageCommand::Verify {
        target: good_url,
        expect_wasm: Some(other),
        sha256: None,
        registry: RegistryArgs {
            insecure: true,
            ..RegistryArgs::default()
        },
    });
    assert!(mismatch.is_err());
}

#[test]
fn a_built_layout_is_a_valid_oci_layout_with_the_same_digest() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let wasm = module_of_size(10_000);
    let wasm_file = write_temp(work.path(), "filter.wasm", &wasm);
    for (format, name) in [(Format::Compat, "compat"), (Format::OciModule, "module")] {
        let out = work.path().join(name);
        run(ImageCommand::Build {
            wasm: wasm_file.clone(),
            out: out.clone(),
            format: format.into(),
            tag: Some("v1".to_owned()),
        })
        .unwrap();
        // skopeo reads the layout and copies it unchanged.
        let target = format!("layout/{name}:v1");
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", out.display()),
            &registry.docker(&target),
        ]);
        let raw = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &registry.docker(&target),
        ])
        .stdout;
        assert_eq!(
            sha256_digest(&raw),
            build(&wasm, format).unwrap().manifest_digest()
        );
    }
}

/// A scenario naming `oci://…` runs exactly the module `meshward image push` put in the
/// registry, in the harness and in Envoy; a WasmPlugin `sha256` that does not match the image
/// fails the file with Istio's reason, and so does an image Istio would not load.
#[test]
fn a_scenario_runs_the_pushed_image_and_refuses_a_sha256_mismatch() {
    use meshward_scenario::suite::{run_file, Targets};

    let registry = Registry::start();
    let wasm_file = filter_wasm("header_limits");
    let wasm = std::fs::read(&wasm_file).unwrap();
    let url = registry.url("meshward/header-limits:scenario");
    run(ImageCommand::Push {
        wasm: wasm_file.clone(),
        target: url.clone(),
        format: meshward_cli::image::FormatArg::Compat,
        registry: RegistryArgs {
            insecure: true,
            ..RegistryArgs::default()
        },
    })
    .unwrap();
    let digest = build(&wasm, Format::Compat).unwrap().wasmplugin_sha256();
    let work = tempfile::tempdir().unwrap();
    let scenario = |sha256: &str| {
        format!(
            "chain:\n  - module: {url}\n    insecureRegistry: true\n    sha256: \"{sha256}\"\n    \
             config: {{headersWithUnderscoresAction: REJECT_REQUEST}}\n\
             cases:\n  - name: a clean request passes\n    request: {{path: /}}\n    expect: {{status: 200}}\n\
             \x20 - name: an underscore header is refused by the pulled filter\n    request:\n      \
             headers: [{{name: x_user, value: a}}]\n    expect: {{status: 400, upstream: false}}\n"
        )
    };
    let good = work.path().join("good.yaml");
    std::fs::write(&good, scenario(&digest)).unwrap();
    let wasm_dir = work.path().join("no-local-modules");
    let report = run_file(&good, &wasm_dir, Targets::HarnessAndEnvoy, true);
    assert_eq!((report.passed, report.failed), (2, 0), "{}", report.text);
    assert!(
        report
            .text
            .contains(&format!("module {url} ⇒ sha256:{digest}")),
        "{}",
        report.text
    );
    // The bytes run are the pushed module's, byte for byte.
    let mut loaded = meshward_scenario::model::Scenario::load(&good).unwrap();
    let pulled = meshward_scenario::oci::pull_modules(&mut loaded).unwrap();
    assert_eq!(std::fs::read(&pulled[0].file).unwrap(), wasm);

    let wrong = work.path().join("wrong.yaml");
    std::fs::write(&wrong, scenario(&"0".repeat(64))).unwrap();
    let report = run_file(&wrong, &wasm_dir, Targets::Harness, false);
    assert_eq!(report.passed, 0, "{}", report.text);
    assert!(report.failed >= 1, "{}", report.text);
    assert!(report.text.contains("does not match"), "{}", report.text);
    assert!(
        report.text.contains("Istio would not load"),
        "{}",
        report.text
    );
}
