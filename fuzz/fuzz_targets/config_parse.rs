//! Every filter's pluginConfig parser on arbitrary bytes; the first byte picks the filter:
//! 0 header-limits, 1 spiffe-authz (parse + compile), 2 jwt-authn, 3 rate-limit, 4 spiffe-authz
//! compiled for TCP (spiffe-authz-tcp).
//!
//! Oracle beyond "never panics": a configuration is a JSON document, so its meaning must not
//! depend on its spelling. When a document is accepted, the same document re-encoded by
//! serde_json (other whitespace, escapes and number spellings) must be accepted too and give an
//! equal configuration (compared through `Debug`, the only view all four types share). A refusal
//! names a field or says why (never an empty message). spiffe-authz and spiffe-authz-tcp accept
//! exactly the same documents (the TCP filter validates the whole config, then cuts it down).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_common::ConfigError;

fn parse(which: u8, bytes: &[u8]) -> Result<String, ConfigError> {
    match which % 5 {
        0 => header_limits_core::Config::parse(bytes).map(|c| format!("{c:?}")),
        1 => spiffe_authz_core::Config::parse(bytes).map(|c| format!("{c:?}")),
        2 => jwt_authn_core::Config::parse(bytes).map(|c| format!("{c:?}")),
        3 => rate_limit_core::Config::parse(bytes).map(|c| format!("{c:?}")),
        _ => spiffe_authz_core::Config::parse_for(bytes, spiffe_authz_core::Protocol::Tcp)
            .map(|c| format!("{c:?}")),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, doc)) = data.split_first() else {
        return;
    };
    let first = parse(which, doc);
    if matches!(which % 5, 1 | 4) {
        // The other protocol's verdict on the same document.
        let other = parse(if which % 5 == 1 { 4 } else { 1 }, doc);
        assert_eq!(first.is_ok(), other.is_ok(), "HTTP and TCP disagree on accepting it");
    }
    let accepted = match first {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    // An empty document means "defaults" for some filters; there is nothing to re-encode.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(doc) else {
        return;
    };
    let reencoded = serde_json::to_vec_pretty(&value).expect("re-encode");
    match parse(which, &reencoded) {
        Ok(again) => assert_eq!(again, accepted, "spelling changed the meaning"),
        Err(e) => panic!(
            "accepted {:?} but refused its re-encoding: {e}",
            String::from_utf8_lossy(doc)
        ),
    }
});
