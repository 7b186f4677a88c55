//! Issue 18, "the CLI works outside this repository": from a fresh clone, the README's install
//! command (`scripts/install.sh`), then, in an empty directory outside any repository holding only
//! a folder of Istio YAML and a scenario file, `meshward test` passes with no `target/` beside it
//! — and a wrong expectation fails.
//!
//! The clone is of committed HEAD: uncommitted changes in this checkout are not in it (commit
//! them to test them here).
//!
//! Cost: about 4 minutes alone on a 2-core machine once the workspace is built (the test suites'
//! debug build and scripts/build-wasm.sh's modules), rather than ~15 from nothing: ~200 s for the
//! install, then one `meshward test` of two files (the debug binary compiles the filters in each
//! run, ~45 s, so the passing and the failing file share one run). The clone
//! builds in a scratch target directory, `<target>/install-clone/`, made afresh by hard-link
//! copying (`cp -al`, file by file here) this workspace's `target/debug`, `target/release` (the
//! host half of the wasm build: proc macros, build scripts) and `target/wasm32-wasip1`, so that
//! the crates.io dependencies are not built again: what the clone compiles is the workspace's own
//! crates (new sources to cargo), relinked modules and the binary. `--debug` keeps the binary in
//! the dev profile those dependencies were built with.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// This workspace's target directory, as cargo resolves it.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo().join(dir),
        None => repo().join("target"),
    }
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Runs `cmd`, failing the test with its output unless it succeeds.
fn check(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(out.status.success(), "{what} failed:\n{}", text(&out));
    out
}

/// Hard-links the tree `from` into `to` (`cp -al`), except what a build must not share with this
/// workspace: `.cargo-lock` (cargo locks it, by inode: a link would make the clone's build wait for
/// this `cargo test`), `incremental/` (never reused by another checkout), and what cargo, rustc
/// and build scripts rewrite in place rather than replace — fingerprints (`.fingerprint/`), build
/// scripts' records and `OUT_DIR`s (`build/`), dep-info files (`*.d`) — which are copied (`cp -a`),
/// so that the clone's build cannot edit this workspace's through a shared inode.
fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type().unwrap();
        if name == ".cargo-lock" || name == "incremental" {
            continue;
        }
        if kind.is_dir() && (name == ".fingerprint" || name == "build") {
            copy_tree(&src, &dst);
        } else if kind.is_dir() {
            link_tree(&src, &dst);
        } else if kind.is_file() && src.extension().is_some_and(|e| e == "d") {
            copy_file(&src, &dst);
        } else if kind.is_file() {
            std::fs::hard_link(&src, &dst).unwrap();
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        }
    }
}

/// `cp -a`: the copies keep their modification times, which cargo compares to tell what is stale
/// (a fresh time on a build script's output would rebuild everything that depends on it).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&src, &dst);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            copy_file(&src, &dst);
        }
    }
}

fn copy_file(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    let modified = std::fs::metadata(from).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(to)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

/// The scratch target directory: this workspace's builds, linked.
fn scratch_target(scratch: &Path) {
    let target = target_dir();
    for sub in ["debug", "release", "wasm32-wasip1"] {
        if target.join(sub).is_dir() {
            link_tree(&target.join(sub), &scratch.join(sub));
        }
    }
}

/// Removes the scratch target directory however the test ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_installed_meshward_tests_a_mesh_in_an_empty_directory() {
    let started = Instant::now();
    let lap = |what: &str| eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
    let tmp = tempfile::Builder::new()
        .prefix("meshward-install-")
        .tempdir()
        .unwrap();
    let tmp = tmp.path();

    // The clone, at this checkout's HEAD.
    let head = check(
        "git rev-parse HEAD",
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(repo()),
    );
    let head = String::from_utf8(head.stdout).unwrap().trim().to_string();
    let clone = tmp.join("meshward");
    check(
        "git clone",
        Command::new("git")
            .args(["clone", "--quiet", "--no-checkout"])
            .arg(repo())
            .arg(&clone),
    );
    check(
        "git checkout",
        Command::new("git")
            .args(["checkout", "--quiet", "--detach", &head])
            .current_dir(&clone),
    );
    lap("cloned");
    // The install's one-package build resolves its dependencies' features differently from the
    // workspace build it is linked from (cargo unifies features over the packages built), so
    // most of them compile again: at the workspace's dev opt-level 2, with debuginfo, that
    // alone took 12 minutes in CI. This checkout-local cargo config (not the README command's
    // business: a profile, not a step) keeps the test to what it shows.
    std::fs::create_dir_all(clone.join(".cargo")).expect("mkdir .cargo");
    std::fs::write(
        clone.join(".cargo/config.toml"),
        "[profile.dev]\ndebug = false\n\n[profile.dev.package.\"*\"]\nopt-level = 0\n\n\
         [profile.dev.package.meshward-harness]\nopt-level = 0\n",
    )
    .expect("write .cargo/config.toml");

    let scratch = Scratch(target_dir().join("install-clone"));
    let _ = std::fs::remove_dir_all(&scratch.0);
    scratch_target(&scratch.0);
    lap("scratch target directory linked");

    // The README's install command, in the clone.
    let inst = tmp.join("inst");
    check(
        "scripts/install.sh",
        Command::new("bash")
            .arg("scripts/install.sh")
            .arg("--root")
            .arg(&inst)
            .arg("--debug")
            .current_dir(&clone)
            .env("CARGO_TARGET_DIR", &scratch.0)
            // A one-off build: incremental data would only be written, never read.
            .env("CARGO_INCREMENTAL", "0")
            // Every crate the lockfile names is in the local registry cache once the workspace
            // has been built: no index update, no network.
            .env("CARGO_NET_OFFLINE", "true")
            .env_remove("MESHWARD_WASM_DIR")
            .env_remove("MESHWARD_EMBED_WASM_DIR"),
    );
    let meshward = inst.join("bin/meshward");
    lap("installed");

    // The user's repository: a folder of Istio YAML and one scenario file, nothing else. The
    // example mesh's ledger, with its JWKS inline (in the repository it is a file beside tests).
    let project = tmp.join("project");
    assert!(!project.starts_with(repo()) && !project.starts_with(&clone));
    let mesh = project.join("istio");
    copy_tree(&repo().join("examples/mesh/resources"), &mesh);
    let jwks = std::fs::read_to_string(repo().join("tests/fixtures/jwt/jwks.json")).unwrap();
    let ledger = std::fs::read_to_string(repo().join("examples/mesh/ledger.yaml")).unwrap();
    let scenario = ledger
        .replace("resources: [resources/]", "resources: [istio/]")
        .replace(
            "{bodyFile: ../../tests/fixtures/jwt/jwks.json}",
            &format!("{{body: '{}'}}", jwks.trim().replace('\'', "''")),
        );
    assert!(
        scenario.contains("[istio/]") && !scenario.contains("bodyFile"),
        "examples/mesh/ledger.yaml changed: update this test's rewriting of its paths"
    );
    std::fs::write(project.join("ledger.yaml"), &scenario).unwrap();
    let cases = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&scenario).unwrap()["cases"]
        .as_sequence()
        .unwrap()
        .len();
    assert!(cases > 10, "{cases} cases");

    // A clean environment: no wasm directory, no target directory, a home of its own.
    let home = tmp.join("home");
    let run = |args: &[&str]| {
        Command::new(&meshward)
            .args(args)
            .current_dir(&project)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("TMPDIR", tmp)
            .output()
            .unwrap()
    };

    let version = run(&["--version"]);
    assert!(
        text(&version).contains("carries its filters"),
        "{}",
        text(&version)
    );

    // One run of two files (each run compiles the filters again, which a debug build takes most
    // of a minute to do): the ledger as it is, and a copy whose first case ("checkout reads an
    // account") wrongly expects a refusal, which the same binary must fail.
    let right = r#"expect: {status: 200, decidedBy: "payments/ledger-read rules[0]"}"#;
    assert!(scenario.contains(right));
    std::fs::write(
        project.join("wrong.yaml"),
        scenario.replacen(right, "expect: {status: 403}", 1),
    )
    .unwrap();
    let out = run(&["test", "ledger.yaml", "wrong.yaml"]);
    lap("meshward test ran");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (ledger, wrong) = stdout
        .split_once("\nwrong.yaml\n")
        .unwrap_or_else(|| panic!("no section for wrong.yaml:\n{}", text(&out)));
    assert!(ledger.starts_with("ledger.yaml\n"), "{}", text(&out));
    assert!(!ledger.contains("FAIL"), "{}", text(&out));
    assert!(
        wrong.contains("FAIL  checkout reads an account"),
        "{}",
        text(&out)
    );
    assert_eq!(wrong.matches("FAIL  ").count(), 1, "{}", text(&out));
    assert_eq!(
        stdout.lines().last(),
        Some(format!("{} passed, 1 failed", 2 * cases - 1).as_str()),
        "{}",
        text(&out)
    );

    // The filters came from the binary, written once under XDG_CACHE_HOME; nothing was written
    // beside the scenario (no target/, no .work/).
    let cached: Vec<PathBuf> = std::fs::read_dir(home.join(".cache/meshward"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let mut modules: Vec<String> = std::fs::read_dir(&cached[0])
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    modules.sort();
    assert_eq!(
        modules,
        [
            "header_limits.wasm",
            "jwt_authn.wasm",
            "meshward.wasm",
            "rate_limit.wasm",
            "spiffe_authz.wasm",
            "spiffe_authz_tcp.wasm"
        ]
    );
    let mut beside: Vec<String> = std::fs::read_dir(&project)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(beside, ["istio", "ledger.yaml", "wrong.yaml"]);

    lap("done");
}
