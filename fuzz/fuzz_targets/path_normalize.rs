//! meshward_common::path::normalize_with on arbitrary request-targets, in both path-parameter
//! modes (`Reject`, the default, and `Strip`).
//!
//! Oracle (issue 12, finding 1): whenever the normalizer accepts a target,
//! 1. the canonical path has none of the spellings that readers disagree on: `//`, `.`/`..`
//!    segments, `;`, `%2F`/`%5C` (any case), `\`, control bytes, space, `?`, `#`, a malformed or
//!    lower-case escape, or an escape of an unreserved character;
//! 2. it is a fixed point: normalizing what is forwarded gives the same path and query, unchanged;
//! 3. `changed() == false` means the raw target is exactly what is forwarded;
//! 4. every permissive backend reading (see `meshward_fuzz::backend`) of the forwarded target
//!    routes on the same segments as the authorized path: the upstream cannot read it as another
//!    path. With `Reject` the same holds for the RAW target (nothing needed rewriting to be safe);
//!    with `Strip` it holds for the raw target under the readings that cut `;params` (the target
//!    is forwarded stripped, so the others never see the raw one).
//! 5. `normalize` is `normalize_with(Reject)`; `Strip` accepts everything `Reject` accepts, with
//!    the same result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_common::path::{normalize, normalize_with, NormalizedPath, PathParameters};
use meshward_fuzz::backend::{authorized_segments, read, Reading, READINGS};

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn check_canonical(path: &str, raw: &str) {
    let b = path.as_bytes();
    assert!(
        b.first() == Some(&b'/'),
        "{raw:?} ⇒ {path:?}: not origin-form"
    );
    assert!(!path.contains("//"), "{raw:?} ⇒ {path:?}: `//`");
    for seg in path.split('/') {
        assert!(seg != "." && seg != "..", "{raw:?} ⇒ {path:?}: dot segment");
    }
    assert!(
        !path.contains(';'),
        "{raw:?} ⇒ {path:?}: `;` (path parameter)"
    );
    for (i, &c) in b.iter().enumerate() {
        assert!(c > 0x20 && c != 0x7f, "{raw:?} ⇒ {path:?}: control byte");
        assert!(
            !matches!(c, b'\\' | b'?' | b'#'),
            "{raw:?} ⇒ {path:?}: `{}`",
            c as char
        );
        if c == b'%' {
            let hi = b.get(i + 1).copied().unwrap_or(0);
            let lo = b.get(i + 2).copied().unwrap_or(0);
            let up = |d: u8| d.is_ascii_digit() || (b'A'..=b'F').contains(&d);
            assert!(up(hi) && up(lo), "{raw:?} ⇒ {path:?}: non-canonical escape");
            let v = u8::from_str_radix(std::str::from_utf8(&[hi, lo]).unwrap(), 16).unwrap();
            assert!(
                !is_unreserved(v),
                "{raw:?} ⇒ {path:?}: escaped unreserved byte"
            );
            assert!(
                !matches!(v, 0 | b'/' | b'\\' | b';'),
                "{raw:?} ⇒ {path:?}: %{hi}{lo}"
            );
        }
    }
}

fn check(raw: &str, mode: PathParameters, n: &NormalizedPath) {
    check_canonical(n.path(), raw);

    let forwarded = n.forward_target();
    if !n.changed() {
        assert_eq!(forwarded, raw, "unchanged but forwarded differs");
    }
    let again = normalize_with(&forwarded, mode).expect("the forwarded target must normalize");
    assert_eq!(again.path(), n.path(), "not a fixed point: {raw:?}");
    assert_eq!(again.query(), n.query(), "query changed: {raw:?}");
    assert!(!again.changed(), "forwarded target changes again: {raw:?}");

    let authorized = authorized_segments(n.path());
    for reading in READINGS {
        assert_eq!(
            read(forwarded.as_bytes(), reading),
            authorized,
            "{mode:?}: {reading:?} reads the forwarded {forwarded:?} as another path than the \
             authorized {:?}",
            n.path()
        );
        if mode == PathParameters::Reject || reading != Reading::DecodeNoParams {
            assert_eq!(
                read(raw.as_bytes(), reading),
                authorized,
                "{mode:?}: {reading:?} reads the raw {raw:?} as another path than the authorized \
                 {:?}",
                n.path()
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let strict = normalize_with(raw, PathParameters::Reject);
    assert_eq!(normalize(raw), strict, "normalize is not the Reject mode");
    let strip = normalize_with(raw, PathParameters::Strip);
    if let Ok(n) = &strict {
        assert_eq!(
            strip.as_ref(),
            Ok(n),
            "Strip differs on a path without parameters"
        );
        check(raw, PathParameters::Reject, n);
    }
    if let Ok(n) = &strip {
        check(raw, PathParameters::Strip, n);
    }
});
