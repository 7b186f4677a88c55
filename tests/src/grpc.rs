//! The test gRPC server `tests/peers/grpc_echo.py` (Python `grpcio`, service
//! `meshward.test.Echo`), run for the duration of a test: [`GrpcEcho::start`].

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The environment variable the gRPC scenario files take the server's port from
/// (`grpc: "127.0.0.1:${MESHWARD_GRPC_ECHO}"`).
pub const PORT_VARIABLE: &str = "MESHWARD_GRPC_ECHO";

/// And the silent port's (a listener that never answers: `${MESHWARD_GRPC_SILENT}`).
pub const SILENT_VARIABLE: &str = "MESHWARD_GRPC_SILENT";

/// A running `grpc_echo.py`; killed when dropped (and it stops by itself when its parent dies).
pub struct GrpcEcho {
    child: Child,
    addr: SocketAddr,
    silent: SocketAddr,
}

impl GrpcEcho {
    /// Starts the server with the project's Python (`$MESHWARD_PYTHON`, else
    /// `<repo>/.venv/bin/python`) and waits for its port. Panics, naming the fix, when the venv or
    /// `grpcio` is missing: a gRPC test fails, it never skips.
    pub fn start() -> Self {
        let python = python();
        assert!(
            python.is_file(),
            "{} missing: run scripts/setup.sh (it creates .venv with grpcio), or set MESHWARD_PYTHON",
            python.display()
        );
        let probe = Command::new(&python)
            .args(["-c", "import grpc"])
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
        assert!(
            probe.status.success(),
            "{} cannot import grpc: run scripts/setup.sh (or `{} -m pip install grpcio`): {}",
            python.display(),
            python.display(),
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        let script = crate::repo().join("tests/peers/grpc_echo.py");
        // Its stderr goes to a file, not the test's: a server held in a `static` outlives the test
        // process until it notices, and must not keep the test runner's pipe open meanwhile
        // (nextest reports such a test as leaky).
        let log = std::env::temp_dir().join(format!(
            "meshward-grpc-echo-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let stderr = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let mut child = Command::new(&python)
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout);
        let mut port = |prefix: &str| {
            let mut line = String::new();
            let read = lines.read_line(&mut line);
            let port = line
                .strip_prefix(prefix)
                .and_then(|p| p.trim().parse::<u16>().ok());
            port.ok_or_else(|| format!("read {read:?}: {line:?}"))
        };
        let ports = port("PORT ").and_then(|p| Ok((p, port("SILENT ")?)));
        let (port, silent) = match ports {
            Ok(ports) => ports,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not print its ports (`PORT <n>`, `SILENT <m>`): {e}; its stderr \
                     ({}):\n{}",
                    script.display(),
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            silent: SocketAddr::from(([127, 0, 0, 1], silent)),
        }
    }

    /// Where the server listens (127.0.0.1, plaintext HTTP/2).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The silent listener: accepts connections, never answers.
    pub fn silent_addr(&self) -> SocketAddr {
        self.silent
    }
}

impl Drop for GrpcEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Servers started by this process, for their log files' names.
static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The Python that runs the server: `$MESHWARD_PYTHON`, else the project's venv.
fn python() -> PathBuf {
    match std::env::var_os("MESHWARD_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => crate::repo().join(".venv/bin/python"),
    }
}
