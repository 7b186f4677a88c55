//! Comparing what a run observed with what a case expects, the same way for the harness and for
//! real Envoy, and comparing the two runs with each other (parity).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{Expect, HeaderExpect};

/// What one request produced, wherever it ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The listener refused the connection: no HTTP response (status 0, no headers, no body).
    pub refused: bool,
    /// Status the client received (0 when refused).
    pub status: u16,
    /// Whether the echo upstream received the request.
    pub reached_upstream: bool,
    /// Request headers as the upstream received them (empty when it was not reached).
    pub upstream_headers: Vec<(String, String)>,
    /// Response headers the client received.
    pub response_headers: Vec<(String, String)>,
    /// Response body the client received.
    pub body: Vec<u8>,
    /// Metric values after the request (only those the case names are compared).
    pub metrics: BTreeMap<String, i64>,
}

impl Observed {
    fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One way in which an observation differs from the expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub what: String,
    pub expected: String,
    pub actual: String,
}

/// Compare an observation with a case's expectations.
pub fn check(expect: &Expect, seen: &Observed) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut push = |what: String, expected: String, actual: String| {
        out.push(Mismatch {
            what,
            expected,
            actual,
        })
    };
    if expect.refused != seen.refused {
        push(
            "connection".into(),
            connection(expect.refused, expect.status),
            connection(seen.refused, Some(seen.status)),
        );
    }
    // A refusal already differs above; its status 0 would only repeat it.
    match expect.status {
        Some(want) if !seen.refused && want != seen.status => {
            push("status".into(), want.to_string(), seen.status.to_string())
        }
        _ => {}
    }
    if expect.upstream() != seen.reached_upstream {
        push(
            "reached upstream".into(),
            expect.upstream().to_string(),
            seen.reached_upstream.to_string(),
        );
    }
    if let Some(body) = &expect.body {
        let text = String::from_utf8_lossy(&seen.body);
        if let Some(needle) = &body.contains {
            if !text.contains(needle.as_str()) {
                push(
                    "body contains".into(),
                    format!("{needle:?}"),
                    abbreviate(&text),
                );
            }
        }
        if let Some(exact) = &body.equals {
            if text != exact.as_str() {
                push(
                    "body equals".into(),
                    format!("{exact:?}"),
                    abbreviate(&text),
                );
            }
        }
    }
    if let Some(h) = &expect.upstream_headers {
        check_headers(
            "upstream request header",
            h,
            &seen.upstream_headers,
            &mut push,
        );
    }
    if let Some(h) = &expect.response_headers {
        check_headers("response header", h, &seen.response_headers, &mut push);
    }
    for (name, want) in &expect.metrics {
        match seen.metrics.get(name) {
            Some(got) if got == want => {}
            Some(got) => push(format!("metric {name}"), want.to_string(), got.to_string()),
            None => push(
                format!("metric {name}"),
                want.to_string(),
                "(not defined)".into(),
            ),
        }
    }
    out
}

fn check_headers(
    kind: &str,
    expect: &HeaderExpect,
    headers: &[(String, String)],
    push: &mut impl FnMut(String, String, String),
) {
    for name in &expect.present {
        if Observed::values(headers, name).is_empty() {
            push(
                format!("{kind} `{name}`"),
                "present".into(),
                "absent".into(),
            );
        }
    }
    for name in &expect.absent {
        let values = Observed::values(headers, name);
        if !values.is_empty() {
            push(
                format!("{kind} `{name}`"),
                "absent".into(),
                format!("{values:?}"),
            );
        }
    }
    for (name, want) in &expect.equal {
        let values = Observed::values(headers, name);
        if values != [want.as_str()] {
            let actual = if values.is_empty() {
                "absent".to_string()
            } else {
                format!("{values:?}")
            };
            push(format!("{kind} `{name}`"), format!("{:?}", [want]), actual);
        }
    }
}

/// How a connection ended, for a diff: refused, or the HTTP status it got (when known).
fn connection(refused: bool, status: Option<u16>) -> String {
    match (refused, status) {
        (true, _) => "refused (no HTTP response)".to_string(),
        (false, Some(status)) => format!("an HTTP response ({status})"),
        (false, None) => "an HTTP response".to_string(),
    }
}

fn abbreviate(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return format!("{text:?}");
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &text[..end], text.len())
}

/// Differences between a harness run and an Envoy run of the same case, limited to what the case
/// checks (refused or not, status, upstream reached, and every header and metric it names). Headers Envoy adds on
/// its own (`x-request-id` values, `date`, `server`…) are not compared unless a case names them.
pub fn parity(expect: &Expect, harness: &Observed, envoy: &Observed) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut diff = |what: String, h: String, e: String| {
        if h != e {
            out.push(Mismatch {
                what,
                expected: format!("harness: {h}"),
                actual: format!("envoy: {e}"),
            });
        }
    };
    diff(
        "connection".into(),
        connection(harness.refused, Some(harness.status)),
        connection(envoy.refused, Some(envoy.status)),
    );
    if !harness.refused && !envoy.refused {
        diff(
            "status".into(),
            harness.status.to_string(),
            envoy.status.to_string(),
        );
    }
    diff(
        "reached upstream".into(),
        harness.reached_upstream.to_string(),
        envoy.reached_upstream.to_string(),
    );
    let named = |h: &Option<HeaderExpect>| -> Vec<String> {
        h.iter()
            .flat_map(|h| {
                h.present
                    .iter()
                    .chain(h.absent.iter())
                    .chain(h.equal.keys())
            })
            .cloned()
            .collect()
    };
    for name in named(&expect.upstream_headers) {
        diff(
            format!("upstream request header `{name}`"),
            format!("{:?}", Observed::values(&harness.upstream_headers, &name)),
            format!("{:?}", Observed::values(&envoy.upstream_headers, &name)),
        );
    }
    for name in named(&expect.response_headers) {
        diff(
            format!("response header `{name}`"),
            format!("{:?}", Observed::values(&harness.response_headers, &name)),
            format!("{:?}", Observed::values(&envoy.response_headers, &name)),
        );
    }
    // An upstream answer is the echo of the request, which holds Envoy's random x-request-id:
    // compare bodies only of replies that did not come from the upstream.
    if expect.body.is_some() && !harness.reached_upstream && !envoy.reached_upstream {
        diff(
            "body".into(),
            abbreviate(&String::from_utf8_lossy(&harness.body)),
            abbreviate(&String::from_utf8_lossy(&envoy.body)),
        );
    }
    for name in expect.metrics.keys() {
        diff(
            format!("metric {name}"),
            format!("{:?}", harness.metrics.get(name)),
            format!("{:?}", envoy.metrics.get(name)),
        );
    }
    out
}

/// Render mismatches as an indented, readable diff.
pub fn render(mismatches: &[Mismatch]) -> String {
    let mut s = String::new();
    for m in mismatches {
        let _ = writeln!(
            s,
            "    {}:\n      - expected: {}\n      + actual:   {}",
            m.what, m.expected, m.actual
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BodyExpect;

    fn seen() -> Observed {
        Observed {
            refused: false,
            status: 200,
            reached_upstream: true,
            upstream_headers: vec![
                ("x-a".into(), "1".into()),
                ("x-d".into(), "1".into()),
                ("x-d".into(), "2".into()),
            ],
            response_headers: vec![("content-type".into(), "application/json".into())],
            body: b"{\"ok\":true}".to_vec(),
            metrics: BTreeMap::from([("m".to_string(), 3)]),
        }
    }

    #[test]
    fn matching_expectation_has_no_mismatch() {
        let expect = Expect {
            status: Some(200),
            upstream_headers: Some(HeaderExpect {
                present: vec!["X-A".into()],
                absent: vec!["x-b".into()],
                equal: BTreeMap::from([("x-a".to_string(), "1".to_string())]),
            }),
            body: Some(BodyExpect {
                contains: Some("ok".into()),
                equals: None,
            }),
            metrics: BTreeMap::from([("m".to_string(), 3)]),
            ..Default::default()
        };
        assert_eq!(check(&expect, &seen()), vec![]);
    }

    #[test]
    fn every_difference_is_reported() {
        let expect = Expect {
            status: Some(403),
            upstream_headers: Some(HeaderExpect {
                present: vec!["x-b".into()],
                absent: vec!["x-a".into()],
                equal: BTreeMap::from([("x-d".to_string(), "1".to_string())]),
            }),
            body: Some(BodyExpect {
                contains: Some("denied".into()),
                equals: None,
            }),
            metrics: BTreeMap::from([("m".to_string(), 4), ("n".to_string(), 0)]),
            ..Default::default()
        };
        let m = check(&expect, &seen());
        let whats: Vec<_> = m.iter().map(|m| m.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "status",
                "reached upstream",
                "body contains",
                "upstream request header `x-b`",
                "upstream request header `x-a`",
                "upstream request header `x-d`",
                "metric m",
                "metric n"
            ]
        );
        assert!(render(&m).contains("- expected: 403"));
    }

    fn refused() -> Observed {
        Observed {
            refused: true,
            ..Observed::default()
        }
    }

    #[test]
    fn a_refusal_is_checked_both_ways() {
        let expect_refused = Expect {
            refused: true,
            ..Default::default()
        };
        assert_eq!(check(&expect_refused, &refused()), vec![]);
        let got_response = check(&expect_refused, &seen());
        let whats: Vec<_> = got_response.iter().map(|m| m.what.as_str()).collect();
        assert_eq!(whats, ["connection", "reached upstream"]);
        let text = render(&got_response);
        assert!(
            text.contains("expected: refused (no HTTP response)")
                && text.contains("actual:   an HTTP response (200)"),
            "{text}"
        );
        let expect_200 = Expect {
            status: Some(200),
            ..Default::default()
        };
        let got_refused = check(&expect_200, &refused());
        let whats: Vec<_> = got_refused.iter().map(|m| m.what.as_str()).collect();
        assert_eq!(whats, ["connection", "reached upstream"]);
        assert!(render(&got_refused).contains("actual:   refused (no HTTP response)"));
    }

    #[test]
    fn parity_compares_refusals() {
        let expect = Expect {
            refused: true,
            ..Default::default()
        };
        assert!(parity(&expect, &refused(), &refused()).is_empty());
        let m = parity(&expect, &refused(), &seen());
        let whats: Vec<_> = m.iter().map(|m| m.what.as_str()).collect();
        assert_eq!(whats, ["connection", "reached upstream"]);
    }

    #[test]
    fn parity_compares_only_what_the_case_names() {
        let expect = Expect {
            status: Some(200),
            upstream_headers: Some(HeaderExpect {
                present: vec!["x-a".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut envoy = seen();
        envoy
            .upstream_headers
            .push(("x-request-id".into(), "abc".into()));
        assert!(parity(&expect, &seen(), &envoy).is_empty());
        envoy.upstream_headers.retain(|(n, _)| n != "x-a");
        assert_eq!(parity(&expect, &seen(), &envoy).len(), 1);
    }
}
