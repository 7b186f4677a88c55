//! Test module `sdk-network`: a network (L4) filter written with the Rust SDK's `StreamContext`,
//! in the style of proxy-wasm-rust-sdk's examples, to pin down how Envoy drives a wasm filter in
//! front of `tcp_proxy` (tests/scenarios/conformance/network/, run in the harness and in Envoy).
//!
//! Plugin configuration: space-separated options (optionally as one JSON string).
//! - `tag=<t>`: metric names are `net.<t>.<event>` (default `m`), so two filters of a chain count
//!   apart;
//! - `prefix=<p>`: every downstream data callback prepends `<p>` to the data (set_buffer at 0,0);
//! - `upper`: upstream data is replaced with its upper-case form (set_buffer at 0,len);
//! - `hold=<n>`: on_downstream_data pauses (StopIteration) until the buffer holds `n` bytes;
//! - `close_on=<w>`: downstream data containing `<w>` closes the downstream connection;
//! - `close_upstream_on=<w>`: upstream data containing `<w>` calls close_upstream;
//! - `trap_on=<w>`: downstream data containing `<w>` panics (a trap);
//! - `props`: the first downstream data is prefixed with `[mtls=…;peer=…;sni=…;src=…;cid=…]`,
//!   read from the connection's properties (the source without its port);
//! - `pause_new`: on_new_connection returns Pause.
//!
//! Counters: `new`, `down_data` (calls), `down_bytes` (sum of data sizes seen), `down_eos`,
//! `up_data`, `up_bytes`, `up_eos`, `down_close_<unknown|local|remote>`,
//! `up_close_<unknown|local|remote>`, `done`, `delete`.

use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, PeerType};

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NetRoot::default()) });
}}

/// Keeps `LogLevel` used on native builds too.
pub const LOG_LEVEL: LogLevel = LogLevel::Trace;

/// The parsed plugin configuration.
#[derive(Default, Clone)]
pub struct Config {
    pub tag: String,
    pub prefix: Option<String>,
    pub upper: bool,
    pub hold: Option<usize>,
    pub close_on: Option<String>,
    pub close_upstream_on: Option<String>,
    pub trap_on: Option<String>,
    pub props: bool,
    pub pause_new: bool,
}

impl Config {
    /// Parses the options; a JSON string (`"tag=a upper"`, as scenario files send a YAML
    /// string) is taken without its quotes.
    pub fn parse(text: &str) -> Result<Config, String> {
        let text = text.trim();
        let text = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(text);
        let mut c = Config {
            tag: "m".to_string(),
            ..Config::default()
        };
        for word in text.split_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (word, None),
            };
            match (key, value) {
                ("tag", Some(v)) => c.tag = v,
                ("prefix", Some(v)) => c.prefix = Some(v),
                ("upper", None) => c.upper = true,
                ("hold", Some(v)) => c.hold = Some(v.parse().map_err(|_| format!("hold={v}"))?),
                ("close_on", Some(v)) => c.close_on = Some(v),
                ("close_upstream_on", Some(v)) => c.close_upstream_on = Some(v),
                ("trap_on", Some(v)) => c.trap_on = Some(v),
                ("props", None) => c.props = true,
                ("pause_new", None) => c.pause_new = true,
                _ => return Err(format!("unknown option {word:?}")),
            }
        }
        Ok(c)
    }
}

#[derive(Default)]
pub struct NetRoot {
    config: Config,
}

impl Context for NetRoot {}

impl RootContext for NetRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match Config::parse(&String::from_utf8_lossy(&raw)) {
            Ok(c) => {
                self.config = c;
                true
            }
            Err(e) => {
                log::error!("sdk-network: {e}");
                false
            }
        }
    }

    fn create_stream_context(&self, context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Conn {
            id: context_id,
            config: self.config.clone(),
            reported: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

pub struct Conn {
    id: u32,
    config: Config,
    reported: bool,
}

fn peer(p: PeerType) -> &'static str {
    match p {
        PeerType::Local => "local",
        PeerType::Remote => "remote",
        _ => "unknown",
    }
}

fn text(v: Option<Vec<u8>>) -> String {
    match v {
        Some(b) => String::from_utf8_lossy(&b).into_owned(),
        None => "-".to_string(),
    }
}

impl Conn {
    /// Adds `by` to the counter (Envoy refuses a counter increment of 0 with BadArgument).
    fn count(&self, event: &str, by: i64) {
        if by == 0 {
            return;
        }
        let name = format!("net.{}.{event}", self.config.tag);
        let id = proxy_wasm::hostcalls::define_metric(MetricType::Counter, &name).unwrap();
        proxy_wasm::hostcalls::increment_metric(id, by).unwrap();
    }

    fn report(&self) -> String {
        let mtls = match self.get_property(vec!["connection", "mtls"]) {
            Some(b) if b.first() == Some(&1) => "true",
            Some(_) => "false",
            None => "-",
        };
        let src = text(self.get_property(vec!["source", "address"]));
        let src = src
            .rsplit_once(':')
            .map(|(ip, _)| ip.to_string())
            .unwrap_or(src);
        let cid = if self.get_property(vec!["connection_id"]).is_some() {
            "yes"
        } else {
            "no"
        };
        format!(
            "[mtls={mtls};peer={};sni={};src={src};cid={cid}]",
            text(self.get_property(vec!["connection", "uri_san_peer_certificate"])),
            text(self.get_property(vec!["connection", "requested_server_name"])),
        )
    }
}

impl Context for Conn {
    fn on_done(&mut self) -> bool {
        self.count("done", 1);
        true
    }
}

impl StreamContext for Conn {
    fn on_new_connection(&mut self) -> Action {
        self.count("new", 1);
        log::info!("sdk-network {}: new connection", self.id);
        if self.config.pause_new {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_downstream_data(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.count("down_data", 1);
        self.count("down_bytes", size as i64);
        if end_of_stream {
            self.count("down_eos", 1);
        }
        let data = self.get_downstream_data(0, size).unwrap_or_default();
        let has = |w: &Option<String>| {
            w.as_ref()
                .is_some_and(|w| String::from_utf8_lossy(&data).contains(w.as_str()))
        };
        if has(&self.config.trap_on) {
            panic!("sdk-network: trap word seen");
        }
        if has(&self.config.close_on) {
            self.close_downstream();
            return Action::Pause;
        }
        if let Some(n) = self.config.hold {
            if data.len() < n && !end_of_stream {
                return Action::Pause;
            }
        }
        if data.is_empty() {
            return Action::Continue;
        }
        if let Some(p) = &self.config.prefix {
            self.set_downstream_data(0, 0, p.as_bytes());
        }
        if self.config.props && !self.reported {
            self.reported = true;
            let r = self.report();
            self.set_downstream_data(0, 0, r.as_bytes());
        }
        Action::Continue
    }

    fn on_downstream_close(&mut self, p: PeerType) {
        self.count(&format!("down_close_{}", peer(p)), 1);
    }

    fn on_upstream_data(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.count("up_data", 1);
        self.count("up_bytes", size as i64);
        if end_of_stream {
            self.count("up_eos", 1);
        }
        let data = self.get_upstream_data(0, size).unwrap_or_default();
        if let Some(w) = &self.config.close_upstream_on {
            if String::from_utf8_lossy(&data).contains(w.as_str()) {
                self.close_upstream();
            }
        }
        if self.config.upper && !data.is_empty() {
            let up = data.to_ascii_uppercase();
            self.set_upstream_data(0, data.len(), &up);
        }
        Action::Continue
    }

    fn on_upstream_close(&mut self, p: PeerType) {
        self.count(&format!("up_close_{}", peer(p)), 1);
    }
}
