//! [`configure`]: the part of `on_configure` every adapter shares.

use std::fmt::Display;

use crate::plugin_configuration;

/// Read the plugin configuration (`size`: what `on_configure` was given) and parse it with the
/// filter's `Config::parse`. `None` when either step fails, after logging why at error level:
///
/// - `"<filter>: cannot read the plugin configuration (host status <status>)"` when the host will
///   not hand the configuration over (see [`plugin_configuration`]: never a truncated one);
/// - `"<filter>: <error>"` when the configuration is refused; with a `ConfigError` that is
///   `invalid config: field `<path>`: <why>`, the line tests/config-rejections looks for.
///
/// `on_configure` returns `false` on `None`, so Envoy refuses the configuration (fail closed).
/// What a filter does once configured (its own log line, counters, shared state) stays in the
/// adapter.
pub fn configure<T, E: Display>(
    filter: &str,
    size: usize,
    parse: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Option<T> {
    let bytes = match plugin_configuration(size) {
        Ok(bytes) => bytes,
        Err(status) => {
            log::error!("{filter}: cannot read the plugin configuration (host status {status})");
            return None;
        }
    };
    match parse(&bytes) {
        Ok(config) => Some(config),
        Err(err) => {
            log::error!("{filter}: {err}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_the_host_will_not_hand_over_is_none_and_never_parsed() {
        // Natively the host answers UNIMPLEMENTED (an empty configuration, size 0, too: the read
        // is a host call).
        let parsed = configure("test", 3, |_| -> Result<(), String> {
            panic!("nothing to parse")
        });
        assert!(parsed.is_none());
    }
}
