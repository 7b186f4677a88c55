//! JWK / JWKS → verification keys. The conversion is ours (jwt-simple parses one JWK at a time and
//! has no JWKS dispatch): RSA from `n`/`e`, EC P-256/P-384 from `x`/`y` as a SEC1 uncompressed
//! point, OKP Ed25519 from `x`, `oct` from `k` (inline JWKS only).
//!
//! Policy (stricter than Envoy, see docs/jwt-authn.md):
//! - a key with `use` other than `sig`, or `key_ops` without `verify`, is skipped;
//! - a key whose `alg` is unknown or does not fit its `kty`/`crv` is skipped;
//! - private members (`d`, `p`, …) make the key unusable: a JWKS must publish public keys only;
//! - RSA: 2048–4096 bits, `e` = 65537, not a ROCA (CVE-2017-15361) modulus;
//! - HMAC keys: at least 32 bytes (and the hash size of their `alg`);
//! - the whole set is refused when two usable keys share a `kid` (ambiguous) or when `oct` keys are
//!   mixed with public keys (a shared secret published next to public keys is a confusion hazard).

use std::collections::HashSet;

use jwt_simple::prelude::{ES256PublicKey, ES384PublicKey, Ed25519PublicKey, RS256PublicKey};
use serde_json::{Map, Value};

use crate::alg::{Alg, KeyFamily};
use crate::b64::decode_jwk_member;

/// Largest JWKS document we parse (remote bodies and inline config alike).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys we keep from one JWKS.
pub const MAX_KEYS: usize = 64;

/// The key material of one usable JWK.
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// Big-endian modulus and exponent, already checked to build a valid jwt-simple RSA key.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    P256(ES256PublicKey),
    P384(ES384PublicKey),
    Ed25519(Ed25519PublicKey),
    Oct(Vec<u8>),
}

impl KeyMaterial {
    pub fn family(&self) -> KeyFamily {
        match self {
            KeyMaterial::Rsa { .. } => KeyFamily::Rsa,
            KeyMaterial::P256(_) => KeyFamily::P256,
            KeyMaterial::P384(_) => KeyFamily::P384,
            KeyMaterial::Ed25519(_) => KeyFamily::Ed25519,
            KeyMaterial::Oct(_) => KeyFamily::Oct,
        }
    }
}

/// One usable verification key.
#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The JWK's own `alg`, when present: then only that algorithm may use the key.
    pub alg: Option<Alg>,
    pub material: KeyMaterial,
    /// DER SubjectPublicKeyInfo of an RSA, P-256 or P-384 key, for the host's `verify_signature`
    /// (`crate::host_verify`). Prepared here, once per key set, not per token.
    pub spki: Option<Vec<u8>>,
}

impl Jwk {
    /// Whether a token signed with `alg` may be checked with this key (kty/crv binding, JWK `alg`,
    /// HMAC key length).
    pub fn accepts(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        if self.material.family() != alg.family() {
            return false;
        }
        match &self.material {
            KeyMaterial::Oct(k) => k.len() >= alg.min_hmac_key_len(),
            _ => true,
        }
    }
}

/// Why one JWK was not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwkError(pub String);

fn err<T>(reason: impl Into<String>) -> Result<T, JwkError> {
    Err(JwkError(reason.into()))
}

/// A set of usable keys plus what was skipped and why (for logs).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
    pub skipped: Vec<String>,
}

/// Why a whole JWKS was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    TooLarge,
    NotJson,
    NoKeysArray,
    /// No usable key; the reasons for each skipped key.
    NoUsableKeys(Vec<String>),
    DuplicateKid(String),
    MixedSymmetric,
}

impl std::fmt::Display for JwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksError::TooLarge => write!(f, "JWKS larger than {MAX_JWKS_BYTES} bytes"),
            JwksError::NotJson => write!(f, "JWKS is not a JSON object"),
            JwksError::NoKeysArray => write!(f, "JWKS has no `keys` array"),
            JwksError::NoUsableKeys(why) => {
                write!(f, "JWKS has no usable key")?;
                if !why.is_empty() {
                    write!(f, " ({})", why.join("; "))?;
                }
                Ok(())
            }
            JwksError::DuplicateKid(kid) => write!(f, "JWKS has two keys with kid `{kid}`"),
            JwksError::MixedSymmetric => {
                write!(f, "JWKS mixes `oct` (shared secret) keys with public keys")
            }
        }
    }
}

/// Parse a JWKS document. `allow_oct` is true only for inline JWKS from config: a shared secret
/// never comes from the network.
pub fn parse_jwks(text: &str, allow_oct: bool) -> Result<KeySet, JwksError> {
    if text.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    let doc: Value = serde_json::from_str(text).map_err(|_| JwksError::NotJson)?;
    let Value::Object(doc) = doc else {
        return Err(JwksError::NotJson);
    };
    let Some(Value::Array(items)) = doc.get("keys") else {
        return Err(JwksError::NoKeysArray);
    };
    let mut set = KeySet::default();
    for (i, item) in items.iter().enumerate() {
        if set.keys.len() >= MAX_KEYS {
            set.skipped
                .push(format!("keys[{i}..]: more than {MAX_KEYS} keys"));
            break;
        }
        let parsed = match item {
            Value::Object(obj) => parse_jwk(obj, allow_oct),
            _ => err("not a JSON object"),
        };
        match parsed {
            Ok(key) => set.keys.push(key),
            Err(JwkError(why)) => set.skipped.push(format!("keys[{i}]: {why}")),
        }
    }
    if set.keys.is_empty() {
        return Err(JwksError::NoUsableKeys(set.skipped));
    }
    // Two signing keys with one `kid` make the selection ambiguous, even when one of them is
    // unusable (a malformed twin would otherwise decide which key a `kid` means).
    let mut kids = HashSet::new();
    for item in items {
        let signing = matches!(item.get("use"), None | Some(Value::String(_)))
            && item
                .get("use")
                .and_then(Value::as_str)
                .is_none_or(|u| u == "sig");
        if let (true, Some(kid)) = (signing, item.get("kid").and_then(Value::as_str)) {
            if !kids.insert(kid) {
                return Err(JwksError::DuplicateKid(kid.to_string()));
            }
        }
    }
    let oct = set
        .keys
        .iter()
        .filter(|k| k.material.family() == KeyFamily::Oct)
        .count();
    if oct != 0 && oct != set.keys.len() {
        return Err(JwksError::MixedSymmetric);
    }
    Ok(set)
}

const RSA_PRIVATE: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth"];

fn str_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, JwkError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => err(format!("`{name}` is not a string")),
    }
}

fn required_bytes(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, JwkError> {
    let Some(text) = str_member(obj, name)? else {
        return err(format!("`{name}` is missing"));
    };
    decode_jwk_member(text).ok_or_else(|| JwkError(format!("`{name}` is not base64url")))
}

/// Convert one JWK object into a usable key.
pub fn parse_jwk(obj: &Map<String, Value>, allow_oct: bool) -> Result<Jwk, JwkError> {
    let Some(kty) = str_member(obj, "kty")? else {
        return err("`kty` is missing");
    };
    match str_member(obj, "use")? {
        None | Some("sig") => {}
        Some(other) => return err(format!("`use` is `{other}`, not `sig`")),
    }
    if let Some(ops) = obj.get("key_ops") {
        let Value::Array(ops) = ops else {
            return err("`key_ops` is not an array");
        };
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return err("`key_ops` does not allow `verify`");
        }
    }
    let kid = str_member(obj, "kid")?.map(str::to_string);
    let alg = match str_member(obj, "alg")? {
        None => None,
        Some(name) => match Alg::parse(name) {
            Some(alg) => Some(alg),
            None => return err(format!("`alg` `{name}` is not supported for signatures")),
        },
    };
    let material = match kty {
        "RSA" => rsa_material(obj)?,
        "EC" => ec_material(obj)?,
        "OKP" => okp_material(obj)?,
        "oct" if allow_oct => oct_material(obj, alg)?,
        "oct" => return err("`oct` keys are only accepted in an inline JWKS"),
        other => return err(format!("`kty` `{other}` is not supported")),
    };
    if let Some(alg) = alg {
        if alg.family() != material.family() {
            return err(format!(
                "`alg` `{}` does not fit this `kty`/`crv`",
                alg.name()
            ));
        }
    }
    let spki = spki(&material);
    Ok(Jwk {
        kid,
        alg,
        material,
        spki,
    })
}

/// The key as DER SubjectPublicKeyInfo, for the key types the host verifies. `None` for the others
/// (and, defensively, if the encoding fails: such a key is then checked in pure Rust).
fn spki(material: &KeyMaterial) -> Option<Vec<u8>> {
    match material {
        KeyMaterial::Rsa { n, e } => RS256PublicKey::from_components(n, e).ok()?.to_der().ok(),
        KeyMaterial::P256(pk) => pk.to_der().ok(),
        KeyMaterial::P384(pk) => pk.to_der().ok(),
        KeyMaterial::Ed25519(_) | KeyMaterial::Oct(_) => None,
    }
}

fn rsa_material(obj: &Map<String, Value>) -> Result<KeyMaterial, JwkError> {
    if let Some(private) = RSA_PRIVATE.iter().find(|m| obj.contains_key(**m)) {
        return err(format!(
            "private member `{private}` present: publish public keys only"
        ));
    }
    let n = required_bytes(obj, "n")?;
    let e = required_bytes(obj, "e")?;
    // jwt-simple enforces 2048..=4096 bits, an odd modulus and e = 65537.
    if RS256PublicKey::from_components(&n, &e).is_err() {
        return err("RSA key refused (needs 2048-4096 bits and e = 65537)");
    }
    if crate::roca::is_roca_modulus(&n) {
        return err("RSA modulus has the ROCA fingerprint (CVE-2017-15361)");
    }
    Ok(KeyMaterial::Rsa { n, e })
}

fn ec_material(obj: &Map<String, Value>) -> Result<KeyMaterial, JwkError> {
    if obj.contains_key("d") {
        return err("private member `d` present: publish public keys only");
    }
    let Some(crv) = str_member(obj, "crv")? else {
        return err("`crv` is missing");
    };
    let width = match crv {
        "P-256" => 32,
        "P-384" => 48,
        other => return err(format!("`crv` `{other}` is not supported")),
    };
    let x = required_bytes(obj, "x")?;
    let y = required_bytes(obj, "y")?;
    if x.len() != width || y.len() != width {
        return err(format!("`x`/`y` must be {width} bytes for {crv}"));
    }
    let mut point = Vec::with_capacity(1 + 2 * 48);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    // from_bytes checks that the point is on the curve (and not the identity).
    let material = if width == 32 {
        ES256PublicKey::from_bytes(&point).map(KeyMaterial::P256)
    } else {
        ES384PublicKey::from_bytes(&point).map(KeyMaterial::P384)
    };
    material.map_err(|_| JwkError(format!("`x`/`y` is not a point on {crv}")))
}

fn okp_material(obj: &Map<String, Value>) -> Result<KeyMaterial, JwkError> {
    if obj.contains_key("d") {
        return err("private member `d` present: publish public keys only");
    }
    match str_member(obj, "crv")? {
        Some("Ed25519") => {}
        Some(other) => return err(format!("`crv` `{other}` is not supported")),
        None => return err("`crv` is missing"),
    }
    let x = required_bytes(obj, "x")?;
    if x.len() != 32 {
        return err("`x` must be 32 bytes for Ed25519");
    }
    Ed25519PublicKey::from_bytes(&x)
        .map(KeyMaterial::Ed25519)
        .map_err(|_| JwkError("`x` is not an Ed25519 public key".into()))
}

fn oct_material(obj: &Map<String, Value>, alg: Option<Alg>) -> Result<KeyMaterial, JwkError> {
    let k = required_bytes(obj, "k")?;
    let min = alg.map_or(32, |a| a.min_hmac_key_len().max(32));
    if k.len() < min {
        return err(format!(
            "`k` is {} bytes; at least {min} are required",
            k.len()
        ));
    }
    Ok(KeyMaterial::Oct(k))
}
