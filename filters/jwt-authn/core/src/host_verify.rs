//! Signatures checked by the host: Envoy's `verify_signature` foreign function (Envoy ≥ 1.30,
//! BoringSSL's `EVP_DigestVerify`), which costs a fraction of a pure-Rust RSA or ECDSA check
//! inside the wasm VM.
//!
//! The host only answers "does this signature verify under this key": choosing candidate keys,
//! the header and claim checks all stay in the core, on both paths. The adapter reaches the host
//! through [`SignatureHost`]; this module builds the arguments, reads the answer and remembers,
//! per VM, whether the host has the function at all.
//!
//! - Which algorithms: RS256/384/512 (PKCS#1 v1.5) and ES256/ES384. PS* and EdDSA stay in pure
//!   Rust (BoringSSL's verify under an RSA key is PKCS#1 v1.5 only; Envoy does not take Ed25519
//!   keys), HS* too (an HMAC is cheap and its key must not leave the filter).
//! - Keys are handed over as DER SubjectPublicKeyInfo, prepared once per key set (JWKS
//!   generation) in [`crate::jwk`]; a JWS ES256/ES384 signature is raw `r‖s` and is re-encoded
//!   as the DER `ECDSA-Sig-Value` BoringSSL reads.
//! - The first call is the probe: `NotFound` means the host never registered the function
//!   (another host, an older Envoy) and this VM uses the pure-Rust path from then on. Any other
//!   failure — a refused call, an answer that does not parse, or `NotFound` after the function
//!   has answered — is a host error: the token is refused (401), never quietly re-checked on the
//!   other path.
//!
//! The protobuf messages are encoded by hand (two messages, five fields): a protobuf crate would
//! add far more to the wasm module than the thirty lines here.

use crate::alg::Alg;

/// What a host refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRefusal {
    /// The host has no foreign function of that name.
    NotFound,
    /// Any other non-OK status (its number, for logs).
    Failed(u32),
}

/// The host's `verify_signature`, as the adapter calls it: serialized `VerifySignatureArguments`
/// in, the serialized `VerifySignatureResult` out.
pub trait SignatureHost {
    fn verify_signature(&self, arguments: &[u8]) -> Result<Vec<u8>, HostRefusal>;
}

/// A host without foreign functions (native builds, tests of the pure path).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHost;

impl SignatureHost for NoHost {
    fn verify_signature(&self, _: &[u8]) -> Result<Vec<u8>, HostRefusal> {
        Err(HostRefusal::NotFound)
    }
}

/// Whether this VM's host has `verify_signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Not asked yet: the next host-path check is the probe.
    Unknown,
    Present,
    Absent,
}

/// The host path of one VM: the host, and what the probe found.
pub struct HostVerifier {
    host: Box<dyn SignatureHost>,
    availability: Availability,
}

impl std::fmt::Debug for HostVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostVerifier")
            .field("availability", &self.availability)
            .finish_non_exhaustive()
    }
}

/// One host check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCheck {
    /// The signature verifies under the key.
    Valid,
    /// It does not (wrong key, tampered text, malformed signature); the host's reason.
    Invalid(String),
    /// The host has no `verify_signature`: check on the pure-Rust path.
    Unavailable,
    /// The host failed: refuse the token.
    Error(String),
}

impl HostVerifier {
    pub fn new(host: Box<dyn SignatureHost>) -> Self {
        Self {
            host,
            availability: Availability::Unknown,
        }
    }

    /// The pure-Rust path only.
    pub fn none() -> Self {
        Self {
            host: Box::new(NoHost),
            availability: Availability::Absent,
        }
    }

    pub fn availability(&self) -> Availability {
        self.availability
    }

    /// Whether `alg` would be checked by the host (if the host has the function).
    pub fn handles(&self, alg: Alg) -> bool {
        self.availability != Availability::Absent && hash_function(alg).is_some()
    }

    /// Check `signature` over `text` with the DER SubjectPublicKeyInfo `spki`.
    pub fn check(&mut self, alg: Alg, spki: &[u8], signature: &[u8], text: &[u8]) -> HostCheck {
        if self.availability == Availability::Absent {
            return HostCheck::Unavailable;
        }
        let Some(hash) = hash_function(alg) else {
            return HostCheck::Unavailable;
        };
        let signature = match ecdsa_scalar_len(alg) {
            None => signature.to_vec(),
            Some(len) => match ecdsa_raw_to_der(signature, len) {
                Some(der) => der,
                // Not `r‖s` of the curve's size: no key can verify it (jwt-simple agrees).
                None => return HostCheck::Invalid("not a raw r||s signature".into()),
            },
        };
        let arguments = encode_arguments(hash, spki, &signature, text);
        match self.host.verify_signature(&arguments) {
            Err(HostRefusal::NotFound) if self.availability == Availability::Unknown => {
                self.availability = Availability::Absent;
                HostCheck::Unavailable
            }
            Err(HostRefusal::NotFound) => {
                HostCheck::Error("verify_signature disappeared (NotFound)".into())
            }
            Err(HostRefusal::Failed(status)) => {
                HostCheck::Error(format!("verify_signature failed with host status {status}"))
            }
            Ok(result) => {
                self.availability = Availability::Present;
                match decode_result(&result) {
                    Some((true, _)) => HostCheck::Valid,
                    Some((false, error)) => HostCheck::Invalid(error),
                    None => HostCheck::Error("verify_signature answered garbage".into()),
                }
            }
        }
    }
}

/// Envoy's name of the digest an algorithm signs, for the algorithms the host verifies.
pub fn hash_function(alg: Alg) -> Option<&'static str> {
    match alg {
        Alg::RS256 | Alg::ES256 => Some("sha256"),
        Alg::RS384 | Alg::ES384 => Some("sha384"),
        Alg::RS512 => Some("sha512"),
        _ => None,
    }
}

/// The byte length of one ECDSA scalar for the ECDSA algorithms (`r‖s` is twice that).
fn ecdsa_scalar_len(alg: Alg) -> Option<usize> {
    match alg {
        Alg::ES256 => Some(32),
        Alg::ES384 => Some(48),
        _ => None,
    }
}

/// A JWS ECDSA signature (`r‖s`, each `len` bytes big-endian, RFC 7518 §3.4) as the DER
/// `SEQUENCE { INTEGER r, INTEGER s }` BoringSSL verifies. `None` unless exactly `2 * len` bytes.
pub fn ecdsa_raw_to_der(raw: &[u8], len: usize) -> Option<Vec<u8>> {
    if raw.len() != 2 * len {
        return None;
    }
    let (r, s) = raw.split_at(len);
    let r = der_integer(r);
    let s = der_integer(s);
    let body_len = r.len() + s.len();
    let mut out = Vec::with_capacity(body_len + 3);
    out.push(0x30);
    push_der_len(&mut out, body_len);
    out.extend_from_slice(&r);
    out.extend_from_slice(&s);
    Some(out)
}

/// A non-negative big-endian integer as a minimal DER INTEGER (leading zeros dropped, a zero byte
/// added when the high bit is set, zero as `02 01 00`).
fn der_integer(be: &[u8]) -> Vec<u8> {
    let first = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    let digits = be.get(first..).unwrap_or_default();
    let pad = digits.first().is_none_or(|&b| b & 0x80 != 0);
    let len = digits.len() + usize::from(pad);
    let mut out = Vec::with_capacity(len + 3);
    out.push(0x02);
    push_der_len(&mut out, len);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

fn push_der_len(out: &mut Vec<u8>, len: usize) {
    // ECDSA-Sig-Value for P-384 is at most 104 bytes: short or one-byte long form suffices.
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.push(0x81);
        out.push((len & 0xff) as u8);
    }
}

/// `VerifySignatureArguments { string hash_function = 1; bytes public_key = 2; bytes signature
/// = 3; bytes text = 4; }` (field 5, `public_key_pem`, unused).
pub fn encode_arguments(hash: &str, spki: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(hash.len() + spki.len() + signature.len() + text.len() + 4 * 6);
    for (field, bytes) in [(1u8, hash.as_bytes()), (2, spki), (3, signature), (4, text)] {
        out.push(field << 3 | 2); // length-delimited
        push_varint(&mut out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    out
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// `VerifySignatureResult { bool result = 1; string error = 2; }`: `None` when the bytes are not
/// that message (unknown fields are skipped, as protobuf readers do).
pub fn decode_result(mut buf: &[u8]) -> Option<(bool, String)> {
    let mut result = false;
    let mut error = String::new();
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let value = read_varint(&mut buf)?;
                if field == 1 {
                    result = value != 0;
                }
            }
            2 => {
                let len = usize::try_from(read_varint(&mut buf)?).ok()?;
                let bytes = buf.get(..len)?;
                buf = buf.get(len..)?;
                if field == 2 {
                    error = String::from_utf8_lossy(bytes).into_owned();
                }
            }
            1 => buf = buf.get(8..)?,
            5 => buf = buf.get(4..)?,
            _ => return None,
        }
        if field == 0 {
            return None;
        }
    }
    Some((result, error))
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn raw_ecdsa_signatures_become_minimal_der() {
        let mut raw = vec![0u8; 64];
        raw[31] = 1; // r = 1
        raw[32] = 0x80; // s has its high bit set
        let der = ecdsa_raw_to_der(&raw, 32).unwrap();
        let mut want = vec![0x30, 3 + 35, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00, 0x80];
        want.extend_from_slice(&[0; 31]);
        assert_eq!(der, want);
        // r = 0 is encoded as the integer zero (and then refused by the host, like jwt-simple).
        let zero = ecdsa_raw_to_der(&[0u8; 64], 32).unwrap();
        assert_eq!(zero, [0x30, 6, 2, 1, 0, 2, 1, 0]);
        // P-384: a full-width r‖s with high bits set needs the long length form (2 × 51 > 127? no:
        // 102 bytes of body, still short form).
        let der = ecdsa_raw_to_der(&[0xff; 96], 48).unwrap();
        assert_eq!(der.get(..2), Some(&[0x30, 102][..]));
        assert!(ecdsa_raw_to_der(&[1; 63], 32).is_none());
        assert!(ecdsa_raw_to_der(&[1; 65], 32).is_none());
        assert!(ecdsa_raw_to_der(&[1; 64], 48).is_none());
    }

    #[test]
    fn arguments_and_results_round_trip_the_proto_wire_format() {
        let args = encode_arguments("sha256", &[0xaa; 200], b"sig", b"");
        // field 1 "sha256", field 2 with a two-byte length (200 = 0xc8 0x01), 3, then 4 empty.
        assert_eq!(&args[..8], b"\x0a\x06sha256");
        assert_eq!(&args[8..11], &[0x12, 0xc8, 0x01]);
        assert_eq!(&args[211..], b"\x1a\x03sig\x22\x00");
        assert_eq!(decode_result(b"\x08\x01"), Some((true, String::new())));
        assert_eq!(
            decode_result(b"\x12\x03bad\x08\x00"),
            Some((false, "bad".into()))
        );
        assert_eq!(decode_result(b""), Some((false, String::new())));
        // Unknown fields are skipped; truncation and field 0 are garbage.
        assert_eq!(
            decode_result(b"\x18\x05\x08\x01"),
            Some((true, String::new()))
        );
        assert_eq!(decode_result(b"\x12\x05ab"), None);
        assert_eq!(decode_result(b"\x00\x01"), None);
        assert_eq!(decode_result(b"\x08"), None);
    }

    /// A host that answers from a script and records the calls.
    struct Scripted {
        answers: RefCell<Vec<Result<Vec<u8>, HostRefusal>>>,
        calls: Rc<RefCell<usize>>,
    }

    impl SignatureHost for Scripted {
        fn verify_signature(&self, _: &[u8]) -> Result<Vec<u8>, HostRefusal> {
            *self.calls.borrow_mut() += 1;
            self.answers.borrow_mut().remove(0)
        }
    }

    fn verifier(answers: Vec<Result<Vec<u8>, HostRefusal>>) -> (HostVerifier, Rc<RefCell<usize>>) {
        let calls = Rc::new(RefCell::new(0));
        let host = Scripted {
            answers: RefCell::new(answers),
            calls: calls.clone(),
        };
        (HostVerifier::new(Box::new(host)), calls)
    }

    #[test]
    fn not_found_at_the_probe_means_pure_rust_for_the_rest_of_the_vm() {
        let (mut v, calls) = verifier(vec![Err(HostRefusal::NotFound)]);
        assert!(v.handles(Alg::RS256));
        assert_eq!(
            v.check(Alg::RS256, b"k", b"s", b"t"),
            HostCheck::Unavailable
        );
        assert_eq!(v.availability(), Availability::Absent);
        assert!(!v.handles(Alg::RS256));
        assert_eq!(
            v.check(Alg::RS256, b"k", b"s", b"t"),
            HostCheck::Unavailable
        );
        assert_eq!(*calls.borrow(), 1, "the host is asked once");
    }

    #[test]
    fn after_a_working_probe_every_failure_is_an_error() {
        let (mut v, _) = verifier(vec![
            Ok(b"\x08\x01".to_vec()),
            Ok(b"\x08\x00\x12\x04nope".to_vec()),
            Err(HostRefusal::NotFound),
            Err(HostRefusal::Failed(2)),
            Ok(b"\x0a".to_vec()),
        ]);
        assert_eq!(v.check(Alg::ES256, b"k", &[1; 64], b"t"), HostCheck::Valid);
        assert_eq!(v.availability(), Availability::Present);
        assert_eq!(
            v.check(Alg::RS384, b"k", b"s", b"t"),
            HostCheck::Invalid("nope".into())
        );
        for _ in 0..3 {
            assert!(matches!(
                v.check(Alg::RS512, b"k", b"s", b"t"),
                HostCheck::Error(_)
            ));
        }
    }

    #[test]
    fn a_first_call_that_fails_otherwise_is_an_error_not_a_fallback() {
        let (mut v, _) = verifier(vec![Err(HostRefusal::Failed(3))]);
        assert!(matches!(
            v.check(Alg::RS256, b"k", b"s", b"t"),
            HostCheck::Error(_)
        ));
        assert_eq!(v.availability(), Availability::Unknown);
    }

    #[test]
    fn only_rsa_pkcs1_and_ecdsa_go_to_the_host() {
        let v = HostVerifier::new(Box::new(NoHost));
        for alg in [Alg::RS256, Alg::RS384, Alg::RS512, Alg::ES256, Alg::ES384] {
            assert!(v.handles(alg), "{alg:?}");
        }
        for alg in [Alg::PS256, Alg::PS512, Alg::EdDSA, Alg::HS256] {
            assert!(!v.handles(alg), "{alg:?}");
        }
    }

    #[test]
    fn a_wrong_length_ecdsa_signature_is_invalid_without_asking_the_host() {
        let (mut v, calls) = verifier(vec![]);
        assert!(matches!(
            v.check(Alg::ES384, b"k", &[1; 64], b"t"),
            HostCheck::Invalid(_)
        ));
        assert_eq!(*calls.borrow(), 0);
    }
}
