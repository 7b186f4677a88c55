//! The verified end-user identity that jwt-authn publishes for the filters after it.
//!
//! jwt-authn, after a token verifies, calls `set_property(PROPERTY_PATH, identity.to_bytes())`.
//! In Envoy that stores the bytes in the request's filter state under `wasm.<segment>`, where only
//! filters (never clients) can write, and `get_property(PROPERTY_PATH)` in a later filter of the
//! same chain reads them back. spiffe-authz (`requestPrincipals`, `request.auth.*`) and rate-limit
//! (`request.auth.principal`, `request.auth.claims[...]`) read it with [`RequestIdentity::from_bytes`].
//! No property ⇒ no verified identity: such conditions do not match. A property that is present
//! but does not parse is NOT "no identity": a reader must treat it as a failure and deny (see
//! [`RequestIdentity::read`]); otherwise a DENY rule on `requestPrincipals` would fail open for an
//! identity it cannot read. jwt-authn only publishes bytes that [`RequestIdentity::read`] accepts
//! ([`RequestIdentity::to_published_bytes`]), and refuses the request (401) otherwise.
//!
//! Wire format: one JSON object (documented in docs/identity.md):
//! `{"principal":"<iss>/<sub>","iss":"…","sub":"…","aud":["…"],"azp":"…","claims":{…payload…}}`.
//! `aud` is always a list (a string `aud` claim becomes a one-element list); `azp` and `sub` may be
//! absent. `claims` is the whole verified payload.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The property path (one segment) jwt-authn publishes the identity under.
pub const PROPERTY_PATH: &[&str] = &["meshward_request_auth"];

/// Why published identity bytes cannot be read ([`RequestIdentity::read`]): the property is
/// there, so a verified identity exists, but this reader cannot know what it says. Deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableIdentity {
    /// What was wrong, for a log line (no attacker-controlled text: only the parser's position
    /// and category).
    pub reason: String,
}

impl std::fmt::Display for UnreadableIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "published request identity is unreadable: {}",
            self.reason
        )
    }
}

/// A verified JWT identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestIdentity {
    /// `iss/sub`, Istio's request principal.
    pub principal: String,
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default)]
    pub aud: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    #[serde(default)]
    pub claims: Map<String, Value>,
}

impl RequestIdentity {
    /// Build the identity of a verified payload. `None` when the payload has no string `iss`
    /// (a verified token always has one: the issuer check requires it).
    pub fn from_claims(claims: Map<String, Value>) -> Option<Self> {
        let iss = claims.get("iss")?.as_str()?.to_string();
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_string);
        let aud = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let azp = claims
            .get("azp")
            .and_then(Value::as_str)
            .map(str::to_string);
        let principal = format!("{iss}/{}", sub.as_deref().unwrap_or(""));
        Some(Self {
            principal,
            iss,
            sub,
            aud,
            azp,
            claims,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain strings and JSON values cannot fail; an empty vector would read back
        // as "no identity", which fails closed.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse the published bytes; `None` when they do not parse.
    ///
    /// Kept for source compatibility. It cannot tell "absent" from "present but unreadable":
    /// readers should call [`RequestIdentity::read`] and deny on `Err`.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// Read the property as the host returned it: `None` (no property) ⇒ `Ok(None)`, no verified
    /// identity; bytes that parse ⇒ `Ok(Some(identity))`; bytes that do not parse, including an
    /// empty value (jwt-authn never publishes one) ⇒ `Err`: an identity exists that this reader
    /// cannot evaluate, so the request must be denied (fail closed), never treated as anonymous.
    pub fn read(bytes: Option<&[u8]>) -> Result<Option<Self>, UnreadableIdentity> {
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        if bytes.is_empty() {
            return Err(UnreadableIdentity {
                reason: "empty value".to_string(),
            });
        }
        serde_json::from_slice(bytes)
            .map(Some)
            .map_err(|e| UnreadableIdentity {
                reason: format!(
                    "{:?} error at line {} column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            })
    }

    /// The bytes to publish, but only if [`RequestIdentity::read`] gives this very identity back
    /// (the readers use the same parser: serde_json with its nesting limit of 128). `None` means
    /// the identity cannot be handed over faithfully (e.g. claims nested so deep that the wrapped
    /// form exceeds the readers' limit): the publisher must refuse the request, not publish.
    pub fn to_published_bytes(&self) -> Option<Vec<u8>> {
        let bytes = serde_json::to_vec(self).ok()?;
        match Self::read(Some(&bytes)) {
            Ok(Some(back)) if back == *self => Some(bytes),
            _ => None,
        }
    }

    /// Values of a (possibly nested) claim as strings, list-aware like Istio's
    /// `request.auth.claims[a][b]`: a string gives itself, a list gives each string element,
    /// numbers and booleans their JSON text; objects and missing claims give nothing.
    pub fn claim_values(&self, path: &[&str]) -> Vec<String> {
        let Some((first, rest)) = path.split_first() else {
            return Vec::new();
        };
        let mut value = match self.claims.get(*first) {
            Some(v) => v,
            None => return Vec::new(),
        };
        for segment in rest {
            value = match value.get(*segment) {
                Some(v) => v,
                None => return Vec::new(),
            };
        }
        match value {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items.iter().filter_map(scalar_text).collect(),
            other => scalar_text(other).into_iter().collect(),
        }
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn builds_principal_and_normalises_aud() {
        let id = RequestIdentity::from_claims(claims(json!({
            "iss": "https://idp", "sub": "alice", "aud": "orders", "azp": "web"
        })))
        .unwrap();
        assert_eq!(id.principal, "https://idp/alice");
        assert_eq!(id.aud, vec!["orders"]);
        assert_eq!(id.azp.as_deref(), Some("web"));
        let back = RequestIdentity::from_bytes(&id.to_bytes()).unwrap();
        assert_eq!(back, id);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn no_iss_no_identity() {
        assert!(RequestIdentity::from_claims(claims(json!({"sub": "a"}))).is_none());
        assert!(RequestIdentity::from_claims(claims(json!({"iss": 5}))).is_none());
        assert!(RequestIdentity::from_bytes(b"not json").is_none());
        assert!(RequestIdentity::from_bytes(b"").is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn read_tells_absent_from_unreadable() {
        assert_eq!(RequestIdentity::read(None), Ok(None));
        assert!(RequestIdentity::read(Some(b"")).is_err());
        assert!(RequestIdentity::read(Some(b"not json")).is_err());
        assert!(
            RequestIdentity::read(Some(b"{\"principal\":\"a\",\"iss\":\"i\",\"x\":1}")).is_err()
        );
        assert!(RequestIdentity::read(Some(b"{\"iss\":\"i\",\"sub\":\"\xff\"}")).is_err());
        let id = RequestIdentity::from_claims(claims(json!({"iss": "i", "sub": "s"}))).unwrap();
        let bytes = id.to_published_bytes().unwrap();
        assert_eq!(RequestIdentity::read(Some(&bytes)), Ok(Some(id)));
    }

    fn nested(depth: usize) -> Value {
        let mut v = json!("leaf");
        for _ in 0..depth {
            v = json!({ "n": v });
        }
        v
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn deep_claims_are_not_published() {
        // The payload alone parses (depth 126 + the payload object), but wrapped in the identity
        // object under `claims` it exceeds serde_json's limit of 128 that every reader uses.
        for depth in [125usize, 126, 127, 200] {
            let payload = json!({"iss": "i", "deep": nested(depth)});
            let Some(text) = serde_json::to_string(&payload).ok() else {
                continue;
            };
            let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&text) else {
                continue; // the payload itself would be refused by the token parser
            };
            let id = RequestIdentity::from_claims(map).unwrap();
            match id.to_published_bytes() {
                Some(bytes) => {
                    assert_eq!(RequestIdentity::read(Some(&bytes)), Ok(Some(id)), "{depth}")
                }
                None => assert!(
                    RequestIdentity::read(serde_json::to_vec(&id).ok().as_deref()).is_err(),
                    "{depth}"
                ),
            }
        }
        let shallow = RequestIdentity::from_claims(claims(json!({"iss": "i", "d": nested(100)})));
        assert!(shallow.unwrap().to_published_bytes().is_some());
        let deep = RequestIdentity::from_claims(claims(json!({"iss": "i", "d": nested(127)})));
        assert!(deep.unwrap().to_published_bytes().is_none());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn nested_and_list_claims() {
        let id = RequestIdentity::from_claims(claims(json!({
            "iss": "i", "groups": ["a", "b", 3], "org": {"team": "red", "n": 7}, "ok": true
        })))
        .unwrap();
        assert_eq!(id.claim_values(&["groups"]), vec!["a", "b", "3"]);
        assert_eq!(id.claim_values(&["org", "team"]), vec!["red"]);
        assert_eq!(id.claim_values(&["org", "n"]), vec!["7"]);
        assert_eq!(id.claim_values(&["ok"]), vec!["true"]);
        assert!(id.claim_values(&["org"]).is_empty());
        assert!(id.claim_values(&["missing", "x"]).is_empty());
        assert!(id.claim_values(&[]).is_empty());
    }
}
