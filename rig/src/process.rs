//! Running Envoy: find the binary, write the bootstrap, start it in its own process group, wait
//! until the admin endpoint says LIVE and the listeners are bound, and stop it by PID on drop.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::certs::{Certs, ClientCert};
use crate::client::Client;
use crate::config::{EnvoyConfig, PLAINTEXT_LISTENER, TLS_LISTENER, TRANSPORT_LISTENER};
use crate::message::Request;
use crate::workdir::{repo_root, WorkDir};

/// How long Envoy may take to become ready (it takes well under 2 s on an idle machine; the
/// margin is for a loaded 2-core CI box compiling wasm in V8).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Envoy gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// The Envoy binary: `$MESHWARD_ENVOY`, else the real binary inside the project's `.venv`
/// (preferred over the `.venv/bin/envoy` wrapper so that the PID we hold is Envoy's own), else
/// the wrapper. An error that says how to install it otherwise.
pub fn envoy_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MESHWARD_ENVOY") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "MESHWARD_ENVOY={} is not a file: point it at Envoy 1.40, or unset it and run scripts/setup.sh",
            path.display()
        );
    }
    let venv = repo_root().join(".venv");
    if let Ok(entries) = std::fs::read_dir(venv.join("lib")) {
        for entry in entries.flatten() {
            let real = entry.path().join("site-packages/envoy/_bin/envoy");
            if real.is_file() {
                return Ok(real);
            }
        }
    }
    let wrapper = venv.join("bin/envoy");
    if wrapper.is_file() {
        return Ok(wrapper);
    }
    bail!(
        "Envoy not found (looked at $MESHWARD_ENVOY and {}): set MESHWARD_ENVOY to an Envoy 1.40 binary, \
         or run scripts/setup.sh in a meshward checkout to install one into its .venv",
        venv.display()
    )
}

/// A running Envoy. Dropping it stops the process (SIGTERM, then SIGKILL) and removes its files.
pub struct Envoy {
    child: Child,
    admin: SocketAddr,
    plaintext: SocketAddr,
    tls: Option<SocketAddr>,
    transport: Option<SocketAddr>,
    log_path: PathBuf,
    // Last: removed after the process is gone.
    dir: WorkDir,
}

/// How Envoy ended when it refused to start.
#[derive(Debug)]
pub struct StartupFailure {
    pub status: ExitStatus,
    /// The whole Envoy log (stdout and stderr).
    pub log: String,
}

impl Envoy {
    /// Starts Envoy with `config` and waits until it is ready (admin `/ready` is `LIVE` and every
    /// listener has its port). On failure the error holds the tail of Envoy's log.
    pub fn start(config: &EnvoyConfig) -> Result<Self> {
        let (mut child, dir, log_path) = spawn(config, Mode::Serve)?;
        let admin_file = dir.path().join("admin.txt");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let ready = wait_ready(&mut child, &admin_file, config, deadline);
        match ready {
            Ok(ready) => Ok(Self {
                child,
                admin: ready.admin,
                plaintext: ready.plaintext,
                tls: ready.tls,
                transport: ready.transport,
                log_path,
                dir,
            }),
            Err(e) => {
                stop(&mut child);
                Err(e.context(format!(
                    "Envoy did not start; its log ends with:\n{}",
                    log_tail(&log_path, 40)
                )))
            }
        }
    }

    /// For configurations Envoy must reject (e.g. a filter whose `on_configure` returns false).
    /// First `envoy --mode validate` (no ports, no workers; it does create the Wasm plugins and
    /// runs `on_configure`, so a rejected plugin config fails there with the filter's log line);
    /// if validation passes, Envoy is started for real and must exit non-zero before becoming
    /// ready. Returns the exit status and the log; an error if Envoy accepted the configuration.
    pub fn validate_or_start_expect_failure(config: &EnvoyConfig) -> Result<StartupFailure> {
        let (mut child, _dir, log_path) = spawn(config, Mode::Validate)?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    return Ok(StartupFailure {
                        status,
                        log: read_log(&log_path),
                    });
                }
                break;
            }
            if Instant::now() > deadline {
                stop(&mut child);
                bail!(
                    "envoy --mode validate did not finish in {STARTUP_TIMEOUT:?}; log:\n{}",
                    log_tail(&log_path, 40)
                );
            }
            std::thread::sleep(POLL);
        }
        Self::start_expect_failure(config)
    }

    fn start_expect_failure(config: &EnvoyConfig) -> Result<StartupFailure> {
        let (mut child, dir, log_path) = spawn(config, Mode::Serve)?;
        let admin_file = dir.path().join("admin.txt");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                if status.success() {
                    bail!("Envoy exited successfully; expected a startup failure");
                }
                return Ok(StartupFailure {
                    status,
                    log: read_log(&log_path),
                });
            }
            if let Some(admin) = read_admin_address(&admin_file) {
                if admin_get(admin, "/ready")
                    .is_ok_and(|(status, body)| status == 200 && body.trim() == "LIVE")
                {
                    stop(&mut child);
                    bail!(
                        "Envoy accepted the configuration and became ready; its log ends with:\n{}",
                        log_tail(&log_path, 40)
                    );
                }
            }
            if Instant::now() > deadline {
                stop(&mut child);
                bail!(
                    "Envoy neither failed nor became ready in {STARTUP_TIMEOUT:?}; log:\n{}",
                    log_tail(&log_path, 40)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The plaintext listener's address.
    pub fn plaintext_addr(&self) -> SocketAddr {
        self.plaintext
    }

    /// The TLS listener's address, if configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }

    /// The address of the listener of [`EnvoyConfig::transport`], if configured (for a fixed port,
    /// a random loopback address).
    pub fn transport_addr(&self) -> Option<SocketAddr> {
        self.transport
    }

    /// The admin endpoint's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Envoy's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory holding the bootstrap and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A plaintext client of the plaintext listener.
    pub fn client(&self) -> Client {
        Client::plaintext(self.plaintext)
    }

    /// A TLS client of the TLS listener, presenting `client_cert` if given.
    pub fn tls_client(&self, certs: &Certs, client_cert: Option<&ClientCert>) -> Result<Client> {
        let addr = self
            .tls
            .ok_or_else(|| anyhow!("this Envoy has no TLS listener (EnvoyConfig::tls)"))?;
        Client::tls(addr, certs, client_cert)
    }

    /// Everything Envoy has logged so far (stdout and stderr).
    pub fn log_contents(&self) -> String {
        read_log(&self.log_path)
    }

    /// Waits until the log contains `needle` (log lines of a request may trail its response).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_contents().contains(needle) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{needle:?} not in Envoy's log after {timeout:?}; it ends with:\n{}",
                    log_tail(&self.log_path, 40)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// GET on the admin endpoint: (status, body).
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        admin_get(self.admin, path)
    }

    /// Every counter and gauge (`/stats?format=json`), by full name. Wasm metrics defined by a
    /// filter appear with Envoy's `wasmcustom.` prefix.
    pub fn stats(&self) -> Result<BTreeMap<String, u64>> {
        let (status, body) = self.admin_get("/stats?format=json")?;
        if status != 200 {
            bail!("/stats returned {status}: {body}");
        }
        let json: Value = serde_json::from_str(&body).context("parsing /stats?format=json")?;
        let mut stats = BTreeMap::new();
        for entry in json["stats"].as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (entry["name"].as_str(), entry["value"].as_u64()) {
                stats.insert(name.to_string(), value);
            }
        }
        Ok(stats)
    }

    /// The counters and gauges the wasm filters defined, by the name the filter gave them
    /// (Envoy shows a filter's `foo.bar` as `wasmcustom.foo.bar`; histograms are not included).
    pub fn wasm_metrics(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .stats()?
            .into_iter()
            .filter_map(|(name, value)| {
                name.strip_prefix(WASM_METRIC_PREFIX)
                    .map(|short| (short.to_string(), value))
            })
            .collect())
    }
}

/// The prefix Envoy puts before the name of every metric a wasm filter defines.
pub const WASM_METRIC_PREFIX: &str = "wasmcustom.";

impl Drop for Envoy {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serve,
    Validate,
}

fn spawn(config: &EnvoyConfig, mode: Mode) -> Result<(Child, WorkDir, PathBuf)> {
    let binary = envoy_binary()?;
    let dir = WorkDir::new("envoy-")?;
    let bootstrap = serde_json::to_string_pretty(&config.bootstrap()?)?;
    let bootstrap_path = dir.write("bootstrap.json", bootstrap)?;
    let log_path = dir.path().join("envoy.log");
    let log = File::create(&log_path).context("creating the Envoy log")?;
    let mut command = Command::new(&binary);
    if mode == Mode::Validate {
        command.args(["--mode", "validate"]);
    }
    let child = command
        .arg("-c")
        .arg(&bootstrap_path)
        .arg("--admin-address-path")
        .arg(dir.path().join("admin.txt"))
        .args(["--concurrency", &config.concurrency_arg().to_string()])
        // Parallel Envoys on one machine would fight over the hot-restart shared memory otherwise.
        .arg("--disable-hot-restart")
        .args(["--log-level", "info"])
        .args(["--component-log-level", config.component_log_levels_arg()])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a signal to the test's group (Ctrl-C) is not Envoy's business,
        // and Envoy is stopped by PID below.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok((child, dir, log_path))
}

/// The admin endpoint and the listeners' bound addresses.
struct Addresses {
    admin: SocketAddr,
    plaintext: SocketAddr,
    tls: Option<SocketAddr>,
    transport: Option<SocketAddr>,
}

fn wait_ready(
    child: &mut Child,
    admin_file: &Path,
    config: &EnvoyConfig,
    deadline: Instant,
) -> Result<Addresses> {
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("Envoy exited during startup with {status}");
        }
        if let Some(admin) = read_admin_address(admin_file) {
            if let Some(addresses) = ready_addresses(admin, config)? {
                return Ok(addresses);
            }
        }
        if Instant::now() > deadline {
            bail!("Envoy not ready after {STARTUP_TIMEOUT:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// `Some` once `/ready` is LIVE and `/listeners` shows every listener with a real port.
fn ready_addresses(admin: SocketAddr, config: &EnvoyConfig) -> Result<Option<Addresses>> {
    match admin_get(admin, "/ready") {
        Ok((200, body)) if body.trim() == "LIVE" => {}
        _ => return Ok(None),
    }
    let (status, body) = admin_get(admin, "/listeners?format=json")?;
    if status != 200 {
        return Ok(None);
    }
    let json: Value = serde_json::from_str(&body).context("parsing /listeners?format=json")?;
    // Each configured listener must be bound; one that is not asked for is ignored.
    let bound = |name: &str, wanted: bool| match (wanted, listener_address(&json, name)) {
        (false, _) => Some(None),
        (true, Some(addr)) => Some(Some(addr)),
        (true, None) => None,
    };
    let (Some(Some(plaintext)), Some(tls), Some(transport)) = (
        bound(PLAINTEXT_LISTENER, true),
        bound(TLS_LISTENER, config.has_tls()),
        bound(TRANSPORT_LISTENER, config.has_transport()),
    ) else {
        return Ok(None);
    };
    Ok(Some(Addresses {
        admin,
        plaintext,
        tls,
        transport,
    }))
}

fn listener_address(json: &Value, name: &str) -> Option<SocketAddr> {
    let listener = json["listener_statuses"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)?;
    let socket = &listener["local_address"]["socket_address"];
    let port = u16::try_from(socket["port_value"].as_u64()?).ok()?;
    let ip = socket["address"].as_str()?.parse().ok()?;
    (port != 0).then_some(SocketAddr::new(ip, port))
}

fn read_admin_address(file: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn admin_get(admin: SocketAddr, path: &str) -> Result<(u16, String)> {
    let response = Client::plaintext(admin)
        .timeout(Duration::from_secs(5))
        .send(&Request::get(path).authority(Some("127.0.0.1")))?;
    Ok((response.status, response.body_text()))
}

/// SIGTERM, then SIGKILL after a grace period; always reaps the child.
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the PID of our own, not yet reaped child: it cannot name another
        // process, and it has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

fn log_tail(path: &Path, lines: usize) -> String {
    let log = read_log(path);
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Envoy {
    /// The bound address of listener `name` (e.g. a [`crate::tcp_listener`] added with
    /// [`crate::EnvoyConfig::raw_listener`]), waiting up to 5 s for it to be bound.
    pub fn listener_addr(&self, name: &str) -> Result<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = self.admin_get("/listeners?format=json")?;
            if status == 200 {
                let json: Value = serde_json::from_str(&body).context("parsing /listeners")?;
                if let Some(addr) = listener_address(&json, name) {
                    return Ok(addr);
                }
            }
            if Instant::now() > deadline {
                bail!("listener {name} not bound after 5 s");
            }
            std::thread::sleep(POLL);
        }
    }
}
