//! meshward_common::spiffe::SpiffeId::parse on arbitrary strings.
//!
//! Oracle: an independent validator of the SPIFFE-ID rules (SPIFFE-ID spec §2, as go-spiffe and
//! reference/envoy-istio-semantics.md §6 apply them) must agree with `parse` on every input —
//! accepted ⇔ valid — and an accepted ID re-serializes to exactly the input, its trust domain and
//! path recompose it, and the Istio namespace / service account are read from the leading
//! segments only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_common::spiffe::SpiffeId;

fn valid(s: &str) -> bool {
    if s.is_empty() || s.len() > 2048 {
        return false;
    }
    let Some(rest) = s.strip_prefix("spiffe://") else {
        return false;
    };
    let (td, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if td.is_empty() || td.len() > 255 {
        return false;
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return false;
    }
    if path.is_empty() {
        return true;
    }
    path[1..].split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = SpiffeId::parse(s);
    assert_eq!(parsed.is_ok(), valid(s), "parse({s:?}) = {parsed:?}");
    let Ok(id) = parsed else {
        return;
    };
    assert_eq!(id.as_str(), s);
    assert_eq!(id.to_string(), s);
    assert_eq!(format!("spiffe://{}{}", id.trust_domain(), id.path()), s);
    assert_eq!(s.parse::<SpiffeId>().ok().as_ref(), Some(&id));
    let segs: Vec<&str> = id.path().split('/').skip(1).collect();
    match id.namespace() {
        Some(ns) => {
            assert!(segs.len() >= 3 && segs[0] == "ns" && segs[1] == ns, "{s:?}");
        }
        None => assert!(!(segs.len() >= 3 && segs[0] == "ns"), "{s:?}"),
    }
    match id.service_account() {
        Some(sa) => assert!(segs.len() == 4 && segs[0] == "ns" && segs[2] == "sa" && segs[3] == sa),
        None => assert!(!(segs.len() == 4 && segs[0] == "ns" && segs[2] == "sa")),
    }
});
