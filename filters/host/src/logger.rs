//! A `log` backend that writes through `proxy_log` and never panics.
//!
//! Replaces `proxy_wasm::set_log_level`, whose logger `unwrap`s the `proxy_log` status (and whose
//! panic hook `unwrap`s it again), so a host refusing a log line would abort the VM.

use std::fmt::Write as _;
use std::sync::Once;

use crate::abi::{self, LogLevel};

struct HostLogger;

static LOGGER: HostLogger = HostLogger;
static INSTALL: Once = Once::new();

/// Install the host logger (once per VM) and set the most verbose level passed on to the host.
///
/// Call it first thing in `proxy_wasm::main!`. Envoy filters again by its own wasm log level, so
/// `LevelFilter::Trace` leaves the choice to the operator. Also installs a panic hook that logs
/// the panic at critical level (wasm32 only): a panic should never happen, but if it does the log
/// says where.
/// Never call `proxy_wasm::set_log_level` as well: it `unwrap`s `log::set_logger`, which fails
/// once this logger is installed.
pub fn init_logger(level: log::LevelFilter) {
    INSTALL.call_once(|| {
        // An error means another logger was installed first; that one keeps logging.
        let _ = log::set_logger(&LOGGER);
        // Only in wasm: a native test binary needs its own hook to report failing tests.
        #[cfg(target_arch = "wasm32")]
        std::panic::set_hook(Box::new(|info| {
            let mut message = String::new();
            let _ = write!(message, "{info}");
            emit(LogLevel::Critical, &message);
        }));
    });
    log::set_max_level(level);
}

/// The ABI level for a `log` level.
pub fn host_level(level: log::Level) -> LogLevel {
    match level {
        log::Level::Error => LogLevel::Error,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Info => LogLevel::Info,
        log::Level::Debug => LogLevel::Debug,
        log::Level::Trace => LogLevel::Trace,
    }
}

/// Send one line to the host, ignoring its status: there is nowhere else to report a failure.
fn emit(level: LogLevel, message: &str) {
    // SAFETY: pointer and length of a live str.
    let _ = unsafe { abi::proxy_log(level as u32, message.as_ptr(), message.len()) };
}

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut message = String::new();
        // `to_string` would panic on a `Display` impl that returns an error; keep what was written.
        let _ = message.write_fmt(*record.args());
        emit(host_level(record.level()), &message);
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_one_to_one_onto_the_abi() {
        assert_eq!(host_level(log::Level::Error) as u32, 4);
        assert_eq!(host_level(log::Level::Warn) as u32, 3);
        assert_eq!(host_level(log::Level::Info) as u32, 2);
        assert_eq!(host_level(log::Level::Debug) as u32, 1);
        assert_eq!(host_level(log::Level::Trace) as u32, 0);
    }

    #[test]
    fn logging_without_a_host_does_not_panic() {
        init_logger(log::LevelFilter::Trace);
        init_logger(log::LevelFilter::Debug);
        assert_eq!(log::max_level(), log::LevelFilter::Debug);
        // Natively proxy_log fails (UNIMPLEMENTED); the failure is swallowed.
        log::error!("a line the host refuses");
        struct Broken;
        impl std::fmt::Display for Broken {
            fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                Err(std::fmt::Error)
            }
        }
        log::error!("a broken value: {}", Broken);
    }
}
