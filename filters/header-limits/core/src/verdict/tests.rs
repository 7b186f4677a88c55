use super::*;

type Map = Vec<(Vec<u8>, Vec<u8>)>;

fn limits(json: &str) -> Config {
    Config::parse(json.as_bytes()).unwrap()
}

/// The pseudo-headers of `GET <path>` for example.com: 7+3 + 5+len(path) + 10+11 + 7+4 bytes.
fn base(path: &str) -> Map {
    vec![
        (b":method".to_vec(), b"GET".to_vec()),
        (b":path".to_vec(), path.as_bytes().to_vec()),
        (b":authority".to_vec(), b"example.com".to_vec()),
        (b":scheme".to_vec(), b"http".to_vec()),
    ]
}

fn size_of(map: &Map) -> usize {
    map.iter().map(|(n, v)| n.len() + v.len()).sum()
}

fn run<'a>(l: &Config, map: &'a Map) -> Verdict<'a> {
    decide(l, map)
}

fn reason(v: &Verdict<'_>) -> Option<Reason> {
    match v {
        Verdict::Reject(r) => Some(r.reason),
        Verdict::Continue { .. } => None,
    }
}

fn rejected(v: &Verdict<'_>) -> Option<Rejection> {
    match v {
        Verdict::Reject(r) => Some(*r),
        Verdict::Continue { .. } => None,
    }
}

fn passes_unchanged(v: &Verdict<'_>) -> bool {
    matches!(v, Verdict::Continue { drop, dropped_entries: 0 } if drop.is_empty())
}

/// `map` plus one `x-fill` header sized so that the total is exactly `total` bytes.
fn filled_to(mut map: Map, total: usize) -> Map {
    let pad = total - size_of(&map) - b"x-fill".len();
    map.push((b"x-fill".to_vec(), vec![b'a'; pad]));
    assert_eq!(size_of(&map), total);
    map
}

#[test]
fn size_boundary_is_inclusive_like_envoy() {
    let l = limits(r#"{"maxRequestHeadersKb":1}"#);
    assert!(passes_unchanged(&run(&l, &filled_to(base("/"), 1024))));
    assert_eq!(
        rejected(&run(&l, &filled_to(base("/"), 1025))),
        Some(Rejection {
            status: 431,
            body: TOO_LARGE_BODY,
            reason: Reason::Size
        })
    );
}

#[test]
fn size_counts_pseudo_headers_and_every_duplicate() {
    let l = limits(r#"{"maxRequestHeadersKb":1}"#);
    // 1000 bytes in two regular headers + the pseudo-headers' 48 ⇒ over 1024 only because
    // the pseudo-headers count.
    let mut map = base("/");
    assert_eq!(size_of(&map), 48);
    map.push((b"x-a".to_vec(), vec![b'a'; 497]));
    map.push((b"x-a".to_vec(), vec![b'a'; 497]));
    assert_eq!(size_of(&map), 1048);
    assert_eq!(reason(&run(&l, &map)), Some(Reason::Size));
}

#[test]
fn default_size_is_60_kib() {
    let l = Config::default();
    assert!(passes_unchanged(&run(&l, &filled_to(base("/"), 60 * 1024))));
    assert_eq!(
        reason(&run(&l, &filled_to(base("/"), 60 * 1024 + 1))),
        Some(Reason::Size)
    );
}

#[test]
fn largest_kb_setting() {
    let l = limits(r#"{"maxRequestHeadersKb":8192}"#);
    assert!(passes_unchanged(&run(
        &l,
        &filled_to(base("/"), 8192 * 1024)
    )));
    assert_eq!(
        reason(&run(&l, &filled_to(base("/"), 8192 * 1024 + 1))),
        Some(Reason::Size)
    );
}

fn with_headers(n: usize) -> Map {
    let mut map = base("/");
    for i in map.len()..n {
        map.push((format!("x-h{i}").into_bytes(), b"1".to_vec()));
    }
    assert_eq!(map.len(), n);
    map
}

#[test]
fn count_boundary_includes_pseudo_headers() {
    let l = limits(r#"{"maxHeadersCount":6}"#);
    assert!(passes_unchanged(&run(&l, &with_headers(6))));
    assert_eq!(
        rejected(&run(&l, &with_headers(7))),
        Some(Rejection {
            status: 431,
            body: TOO_LARGE_BODY,
            reason: Reason::Count
        })
    );
    // Four pseudo-headers alone are four entries.
    let l = limits(r#"{"maxHeadersCount":3}"#);
    assert_eq!(reason(&run(&l, &base("/"))), Some(Reason::Count));
}

#[test]
fn default_count_is_100() {
    let l = Config::default();
    assert!(passes_unchanged(&run(&l, &with_headers(100))));
    assert_eq!(reason(&run(&l, &with_headers(101))), Some(Reason::Count));
}

#[test]
fn duplicates_count_once_each() {
    let l = limits(r#"{"maxHeadersCount":5}"#);
    let mut map = base("/");
    map.push((b"x-a".to_vec(), b"1".to_vec()));
    assert!(passes_unchanged(&run(&l, &map)));
    map.push((b"x-a".to_vec(), b"2".to_vec()));
    assert_eq!(reason(&run(&l, &map)), Some(Reason::Count));
}

#[test]
fn value_boundary() {
    let l = limits(r#"{"maxHeaderValueBytes":16}"#);
    let mut map = base("/");
    map.push((b"x-v".to_vec(), vec![b'v'; 16]));
    assert!(passes_unchanged(&run(&l, &map)));
    map.push((b"x-w".to_vec(), vec![b'w'; 17]));
    assert_eq!(
        rejected(&run(&l, &map)),
        Some(Rejection {
            status: 431,
            body: TOO_LARGE_BODY,
            reason: Reason::ValueBytes
        })
    );
}

#[test]
fn value_limit_covers_pseudo_header_values() {
    let l = limits(r#"{"maxHeaderValueBytes":11}"#);
    // `:authority: example.com` is exactly 11.
    assert!(passes_unchanged(&run(&l, &base("/"))));
    let mut map = base("/");
    if let Some(auth) = map.iter_mut().find(|(n, _)| n == b":authority") {
        auth.1 = b"example.com2".to_vec();
    }
    assert_eq!(reason(&run(&l, &map)), Some(Reason::ValueBytes));
}

#[test]
fn no_value_or_path_limit_by_default() {
    let mut map = base(&format!("/{}", "p".repeat(40_000)));
    map.push((b"x-v".to_vec(), vec![b'v'; 20_000]));
    assert!(passes_unchanged(&run(&Config::default(), &map)));
}

#[test]
fn path_boundary_counts_the_query() {
    let l = limits(r#"{"maxPathBytes":10}"#);
    assert!(passes_unchanged(&run(&l, &base("/abc?q=123"))));
    assert_eq!(
        rejected(&run(&l, &base("/abc?q=1234"))),
        Some(Rejection {
            status: 431,
            body: TOO_LARGE_BODY,
            reason: Reason::PathBytes
        })
    );
}

#[test]
fn path_limit_uses_the_given_path_only() {
    let l = limits(r#"{"maxPathBytes":4}"#);
    let map = base("/abcdef");
    assert_eq!(
        reason(&evaluate(&l, &map, b"/abcdef")),
        Some(Reason::PathBytes)
    );
    // Without a `:path` (CONNECT) there is nothing to measure.
    let connect: Map = vec![(b":method".to_vec(), b"CONNECT".to_vec())];
    assert_eq!(request_path(&connect), b"");
    assert!(passes_unchanged(&run(&l, &connect)));
}

fn with_underscore(extra: &[(&str, &str)]) -> Map {
    let mut map = base("/");
    map.push((b"x_user".to_vec(), b"alice".to_vec()));
    map.push((b"x-ok".to_vec(), b"1".to_vec()));
    for (n, v) in extra {
        map.push((n.as_bytes().to_vec(), v.as_bytes().to_vec()));
    }
    map
}

#[test]
fn underscore_allowed_by_default() {
    assert!(passes_unchanged(&run(
        &Config::default(),
        &with_underscore(&[])
    )));
}

#[test]
fn underscore_reject_is_400() {
    let l = limits(r#"{"headersWithUnderscoresAction":"REJECT_REQUEST"}"#);
    assert_eq!(
        rejected(&run(&l, &with_underscore(&[]))),
        Some(Rejection {
            status: 400,
            body: BAD_REQUEST_BODY,
            reason: Reason::Underscore
        })
    );
    assert!(passes_unchanged(&run(&l, &base("/"))));
}

#[test]
fn underscore_drop_names_each_name_once_and_counts_entries() {
    let l = limits(r#"{"headersWithUnderscoresAction":"DROP_HEADER"}"#);
    let map = with_underscore(&[("a_b", "1"), ("x_user", "bob"), ("x-c", "2")]);
    match run(&l, &map) {
        Verdict::Continue {
            drop,
            dropped_entries,
        } => {
            assert_eq!(drop, vec![&b"a_b"[..], &b"x_user"[..]]);
            assert_eq!(dropped_entries, 3);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pseudo_headers_are_not_underscore_headers() {
    let drop = limits(r#"{"headersWithUnderscoresAction":"DROP_HEADER"}"#);
    let reject = limits(r#"{"headersWithUnderscoresAction":"REJECT_REQUEST"}"#);
    let mut map = base("/a_b");
    map.push((b":x_pseudo".to_vec(), b"v".to_vec()));
    assert!(passes_unchanged(&run(&drop, &map)));
    assert!(passes_unchanged(&run(&reject, &map)));
}

#[test]
fn limits_are_checked_before_dropping() {
    // A request over a limit is refused even if dropping its underscore headers would fit it.
    let l = limits(r#"{"headersWithUnderscoresAction":"DROP_HEADER","maxHeadersCount":6}"#);
    let map = with_underscore(&[("y_z", "1")]);
    assert_eq!(map.len(), 7);
    assert_eq!(reason(&run(&l, &map)), Some(Reason::Count));
}

#[test]
fn control_characters_are_400() {
    for bad in [&b"a\0b"[..], b"a\rb", b"a\nb", b"\n", b"\0"] {
        let mut in_value = base("/");
        in_value.push((b"x-a".to_vec(), bad.to_vec()));
        let v = run(&Config::default(), &in_value);
        assert_eq!(
            v,
            Verdict::Reject(Rejection {
                status: 400,
                body: BAD_REQUEST_BODY,
                reason: Reason::InvalidChar
            })
        );

        let mut in_name = base("/");
        in_name.push((bad.to_vec(), b"1".to_vec()));
        assert_eq!(
            reason(&run(&Config::default(), &in_name)),
            Some(Reason::InvalidChar)
        );
    }
    // In a pseudo-header value too.
    assert_eq!(
        reason(&run(&Config::default(), &base("/a\r\nb"))),
        Some(Reason::InvalidChar)
    );
}

/// Every byte 0x01–0x1F and 0x7F except CR and LF (which are `InvalidChar`).
fn control_bytes() -> Vec<u8> {
    (0x01..0x20u8)
        .chain([0x7f])
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect()
}

#[test]
fn other_control_bytes_are_400_by_default_in_names_and_values() {
    let bytes = control_bytes();
    assert_eq!(bytes.len(), 30);
    for b in bytes {
        for bad in [vec![b'a', b, b'b'], vec![b], vec![b'a', b], vec![b, b'a']] {
            let mut in_value = base("/");
            in_value.push((b"x-a".to_vec(), bad.clone()));
            assert_eq!(
                rejected(&run(&Config::default(), &in_value)),
                Some(Rejection {
                    status: 400,
                    body: BAD_REQUEST_BODY,
                    reason: Reason::ControlChar
                }),
                "value {bad:?}"
            );
            let mut in_name = base("/");
            in_name.push((bad.clone(), b"1".to_vec()));
            assert_eq!(
                reason(&run(&Config::default(), &in_name)),
                Some(Reason::ControlChar),
                "name {bad:?}"
            );
        }
        // Pseudo-header values too (`:authority`, `:path`), and a later duplicate of a clean one.
        let mut authority = base("/");
        authority[2].1.push(b);
        assert_eq!(
            reason(&run(&Config::default(), &authority)),
            Some(Reason::ControlChar)
        );
        let mut dup = base("/");
        dup.push((b"x-a".to_vec(), b"clean".to_vec()));
        dup.push((b"x-a".to_vec(), vec![b'x', b]));
        assert_eq!(
            reason(&run(&Config::default(), &dup)),
            Some(Reason::ControlChar)
        );
    }
}

#[test]
fn control_bytes_pass_when_switched_off_but_nul_cr_lf_never_do() {
    let off = limits(r#"{"rejectControlCharacters":false}"#);
    for b in control_bytes() {
        let mut map = base("/");
        map.push((b"x-a".to_vec(), vec![b'a', b, b'b']));
        assert!(passes_unchanged(&run(&off, &map)), "byte {b:#04x}");
    }
    for bad in [&b"a\0b"[..], b"a\rb", b"a\nb"] {
        let mut map = base("/");
        map.push((b"x-a".to_vec(), bad.to_vec()));
        assert_eq!(reason(&run(&off, &map)), Some(Reason::InvalidChar));
    }
}

#[test]
fn nul_cr_lf_win_over_other_control_bytes_whatever_the_order() {
    let mut map = base("/");
    map.push((b"x-a".to_vec(), b"\x01".to_vec()));
    map.push((b"x-b".to_vec(), b"\0".to_vec()));
    map.push((b"x-c".to_vec(), b"\x7f".to_vec()));
    assert_eq!(
        reason(&run(&Config::default(), &map)),
        Some(Reason::InvalidChar)
    );
}

#[test]
fn control_characters_win_over_limits() {
    let l = limits(r#"{"maxRequestHeadersKb":1,"maxHeadersCount":4}"#);
    let mut map = filled_to(base("/"), 2000);
    map.push((b"x-a".to_vec(), b"\t".to_vec()));
    assert_eq!(reason(&run(&l, &map)), Some(Reason::ControlChar));
}

#[test]
fn other_bytes_are_fine() {
    let mut map = base("/");
    map.push((b"x-space".to_vec(), b"a b c".to_vec()));
    map.push((b"x-bin".to_vec(), vec![0x80, 0xff, 0x20, 0x7e, 0xc3, 0xa9]));
    map.push((b"x-empty".to_vec(), Vec::new()));
    assert!(passes_unchanged(&run(&Config::default(), &map)));
    // Every byte 0x20..=0x7E and 0x80..=0xFF in one value.
    let mut all = base("/");
    all.push((
        b"x-all".to_vec(),
        (0x20..=0xffu8).filter(|&b| b != 0x7f).collect(),
    ));
    assert!(passes_unchanged(&run(&Config::default(), &all)));
}

#[test]
fn invalid_characters_win_over_limits() {
    let l = limits(r#"{"maxRequestHeadersKb":1,"maxHeadersCount":4}"#);
    let mut map = filled_to(base("/"), 2000);
    map.push((b"x-a".to_vec(), b"\0".to_vec()));
    assert_eq!(reason(&run(&l, &map)), Some(Reason::InvalidChar));
}

#[test]
fn order_of_checks() {
    let all = limits(
        r#"{"maxRequestHeadersKb":1,"maxHeadersCount":5,"maxPathBytes":4,"maxHeaderValueBytes":8,
            "headersWithUnderscoresAction":"REJECT_REQUEST"}"#,
    );
    let mut map = base("/long-path");
    map.push((b"x_a".to_vec(), vec![b'v'; 9]));
    assert_eq!(reason(&run(&all, &map)), Some(Reason::PathBytes));
    map.push((b"x-b".to_vec(), b"1".to_vec()));
    assert_eq!(reason(&run(&all, &map)), Some(Reason::Count));
    map.push((b"x-c".to_vec(), vec![b'c'; 1024]));
    assert_eq!(reason(&run(&all, &map)), Some(Reason::Size));

    let value_then_underscore =
        limits(r#"{"maxHeaderValueBytes":8,"headersWithUnderscoresAction":"REJECT_REQUEST"}"#);
    let mut map = base("/");
    map.push((b"x_a".to_vec(), vec![b'v'; 9]));
    assert_eq!(
        reason(&run(&value_then_underscore, &map)),
        Some(Reason::ValueBytes)
    );
}

#[test]
fn happy_path_does_not_allocate_a_drop_list() {
    let l = limits(r#"{"headersWithUnderscoresAction":"DROP_HEADER"}"#);
    match run(&l, &base("/")) {
        Verdict::Continue { drop, .. } => assert_eq!(drop.capacity(), 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_map_passes() {
    let map: Map = Vec::new();
    assert!(passes_unchanged(&run(&Config::default(), &map)));
}

#[test]
fn borrowed_and_str_inputs() {
    // The adapter hands over borrowed slices; `&str` names work too.
    let map: Vec<(&str, &[u8])> = vec![(":path", b"/x"), ("x_y", b"1")];
    let l = limits(r#"{"headersWithUnderscoresAction":"DROP_HEADER"}"#);
    assert_eq!(request_path(&map), b"/x");
    assert_eq!(
        run_any(&l, &map),
        Verdict::Continue {
            drop: vec![&b"x_y"[..]],
            dropped_entries: 1
        }
    );
}

fn run_any<'a>(l: &Config, map: &'a [(&'a str, &'a [u8])]) -> Verdict<'a> {
    decide(l, map)
}

#[test]
fn reasons_have_distinct_metrics_and_details() {
    let mut metrics: Vec<_> = Reason::ALL.iter().map(|r| r.metric()).collect();
    metrics.push(DROPPED_UNDERSCORE_METRIC);
    metrics.sort_unstable();
    metrics.dedup();
    assert_eq!(metrics.len(), Reason::ALL.len() + 1);
    for r in Reason::ALL {
        assert!(r.metric().ends_with(r.as_str()));
        assert!(!r.details().contains(char::is_whitespace));
    }
}

/// The word-at-a-time scan answers as the byte-by-byte one, for every byte value at every
/// position of a word and of the tail, among clean bytes of every kind (ASCII, space, obs-text).
#[test]
fn the_word_scan_finds_every_control_byte_the_byte_scan_finds() {
    let naive = |bytes: &[u8]| bytes.iter().any(|&b| b < 0x20 || b == 0x7F);
    let fillers: [u8; 5] = [b'a', b' ', 0x80, 0xFF, 0x7E];
    for len in 0..=19 {
        for filler in fillers {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = vec![filler; len];
                    bytes[at] = b;
                    assert_eq!(
                        has_control_byte(&bytes),
                        naive(&bytes),
                        "byte {b:#04x} at {at} of {len}, filler {filler:#04x}"
                    );
                }
            }
            assert!(!has_control_byte(&vec![filler; len]));
        }
    }
    // Two flagged bytes, and a flagged byte beside the borrow-prone 0x20 and 0x80.
    assert!(has_control_byte(b"\x1f\x20\x7f\x80abcd"));
    assert!(!has_control_byte(b"\x20\x80\x20\x80\x20\x80\x20\x80\x21"));
}
