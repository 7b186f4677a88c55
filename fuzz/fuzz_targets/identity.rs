//! meshward_common::identity on arbitrary bytes: what a reader does with the property jwt-authn
//! publishes (issue 12, finding 7), and what jwt-authn publishes for an arbitrary payload.
//!
//! Oracle:
//! - `read(None)` is "no identity"; `read(Some(bytes))` is never "no identity": present bytes
//!   either parse or are an error the reader must deny on;
//! - an identity that reads back is published again as bytes that read back as the same identity;
//! - for an arbitrary JSON payload, `from_claims` + `to_published_bytes` either refuses (jwt-authn
//!   then answers 401) or gives bytes that `read` turns into exactly that identity, whose
//!   principal is `iss/sub` of the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshward_common::identity::RequestIdentity;

fuzz_target!(|data: &[u8]| {
    assert!(matches!(RequestIdentity::read(None), Ok(None)));
    match RequestIdentity::read(Some(data)) {
        Ok(None) => panic!("present bytes read as no identity: {data:?}"),
        Ok(Some(id)) => {
            if let Some(bytes) = id.to_published_bytes() {
                let back = RequestIdentity::read(Some(&bytes));
                assert!(matches!(&back, Ok(Some(b)) if *b == id), "{back:?}");
            }
        }
        Err(e) => assert!(!e.reason.is_empty()),
    }

    let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice(data) else {
        return;
    };
    let iss = claims
        .get("iss")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let sub = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let Some(id) = RequestIdentity::from_claims(claims) else {
        assert!(iss.is_none(), "a payload with a string iss has an identity");
        return;
    };
    assert_eq!(
        id.principal,
        format!("{}/{}", iss.unwrap(), sub.unwrap_or_default())
    );
    if let Some(bytes) = id.to_published_bytes() {
        match RequestIdentity::read(Some(&bytes)) {
            Ok(Some(back)) => assert_eq!(back, id),
            other => panic!("published bytes do not read back: {other:?}"),
        }
    }
});
