//! The signature layer: pick candidate keys by `kid`/`alg`/`kty`, check the signature — with the
//! host's `verify_signature` where it has one and the algorithm is one it verifies
//! ([`crate::host_verify`]), with jwt-simple otherwise. Claims are checked elsewhere (`token`), so
//! jwt-simple's own time checks are neutralised here (fixed clock at 0, no tolerance, future
//! tokens accepted). Both paths give the same verdict for every token (the Wycheproof two-path
//! test in tests/tests/jwt_signature_paths.rs).

use jwt_simple::prelude::*;

use crate::alg::Alg;
use crate::host_verify::{HostCheck, HostVerifier};
use crate::jwk::{Jwk, KeyMaterial, KeySet};
use crate::status::AuthError;
use crate::token::{Jws, MAX_TOKEN_BYTES};

/// Outcome of a signature check that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// Valid, and jwt-simple could read the payload as a JWT claims set.
    Verified,
    /// Valid, but the payload is not a JWT claims set jwt-simple can read (e.g. a raw-bytes JWS
    /// payload). Only the Wycheproof signature-layer tests care; a JWT with such a payload is refused.
    VerifiedPayloadNotClaims,
}

fn options() -> VerificationOptions {
    VerificationOptions {
        accept_future: true,
        time_tolerance: Some(Duration::from_secs(0)),
        artificial_time: Some(UnixTimeStamp::from_secs(0)),
        max_token_length: Some(MAX_TOKEN_BYTES),
        ..VerificationOptions::default()
    }
}

/// Check `jws` against the keys of `keys` that may verify it, in pure Rust.
///
/// Candidates: a key is skipped when both it and the token have a `kid` and they differ, when its
/// `alg` (if any) differs from the token's, or when its type/curve does not fit the `alg`.
/// No candidate ⇒ [`AuthError::KidAlgMismatch`]; no candidate verifies ⇒ [`AuthError::VerificationFail`].
pub fn verify_signature(jws: &Jws<'_>, keys: &KeySet) -> Result<Signature, AuthError> {
    verify_signature_with(jws, keys, &mut HostVerifier::none())
}

/// [`verify_signature`], asking `host` first for the algorithms it verifies. A host error refuses
/// the token ([`AuthError::HostVerifyFailed`], a 401) rather than trying the other path.
pub fn verify_signature_with(
    jws: &Jws<'_>,
    keys: &KeySet,
    host: &mut HostVerifier,
) -> Result<Signature, AuthError> {
    let mut tried = false;
    for key in keys
        .keys
        .iter()
        .filter(|k| kid_matches(k, jws.kid.as_deref()) && k.accepts(jws.alg))
    {
        tried = true;
        if let (true, Some(spki)) = (host.handles(jws.alg), key.spki.as_deref()) {
            match host.check(jws.alg, spki, &jws.signature, jws.signing_input.as_bytes()) {
                HostCheck::Valid => return Ok(payload_kind(jws)),
                HostCheck::Invalid(_) => continue,
                HostCheck::Error(_) => return Err(AuthError::HostVerifyFailed),
                // The probe found no `verify_signature`: this key, and every later one, in Rust.
                HostCheck::Unavailable => {}
            }
        }
        if let Some(outcome) = check_one(jws, key) {
            return Ok(outcome);
        }
    }
    Err(if tried {
        AuthError::VerificationFail
    } else {
        AuthError::KidAlgMismatch
    })
}

/// What jwt-simple would say of a payload whose signature verified: a JWT claims set or not.
fn payload_kind(jws: &Jws<'_>) -> Signature {
    match serde_json::from_slice::<JWTClaims<NoCustomClaims>>(&jws.payload) {
        Ok(_) => Signature::Verified,
        Err(_) => Signature::VerifiedPayloadNotClaims,
    }
}

fn kid_matches(key: &Jwk, token_kid: Option<&str>) -> bool {
    match (key.kid.as_deref(), token_kid) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// `Some` when the signature is valid under this key.
fn check_one(jws: &Jws<'_>, key: &Jwk) -> Option<Signature> {
    let token = jws.raw;
    let opts = Some(options());
    let result: Result<JWTClaims<NoCustomClaims>, jwt_simple::Error> =
        match (&key.material, jws.alg) {
            (KeyMaterial::Rsa { n, e }, alg) => verify_rsa(alg, n, e, token, opts)?,
            (KeyMaterial::P256(pk), Alg::ES256) => pk.verify_token(token, opts),
            (KeyMaterial::P384(pk), Alg::ES384) => pk.verify_token(token, opts),
            (KeyMaterial::Ed25519(pk), Alg::EdDSA) => pk.verify_token(token, opts),
            (KeyMaterial::Oct(k), Alg::HS256) => HS256Key::from_bytes(k).verify_token(token, opts),
            (KeyMaterial::Oct(k), Alg::HS384) => HS384Key::from_bytes(k).verify_token(token, opts),
            (KeyMaterial::Oct(k), Alg::HS512) => HS512Key::from_bytes(k).verify_token(token, opts),
            _ => return None,
        };
    match result {
        Ok(_) => Some(Signature::Verified),
        // `parse_jws` already decoded every section with a stricter base64url decoder and parsed the
        // header with jwt-simple's types, so the only serde error jwt-simple can still raise is the
        // claims parse, which it runs after the signature check succeeded.
        Err(e) if e.downcast_ref::<serde_json::Error>().is_some() => {
            Some(Signature::VerifiedPayloadNotClaims)
        }
        Err(_) => None,
    }
}

type RsaResult = Result<JWTClaims<NoCustomClaims>, jwt_simple::Error>;

fn verify_rsa(
    alg: Alg,
    n: &[u8],
    e: &[u8],
    token: &str,
    opts: Option<VerificationOptions>,
) -> Option<RsaResult> {
    macro_rules! with {
        ($key:ty) => {
            <$key>::from_components(n, e)
                .ok()
                .map(|pk| pk.verify_token(token, opts))
        };
    }
    match alg {
        Alg::RS256 => with!(RS256PublicKey),
        Alg::RS384 => with!(RS384PublicKey),
        Alg::RS512 => with!(RS512PublicKey),
        Alg::PS256 => with!(PS256PublicKey),
        Alg::PS384 => with!(PS384PublicKey),
        Alg::PS512 => with!(PS512PublicKey),
        _ => None,
    }
}
