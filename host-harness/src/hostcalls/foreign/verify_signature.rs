//! Envoy's `verify_signature` foreign function (source/extensions/common/wasm/foreign.cc and
//! source/common/crypto/utility_impl.cc, 1.40): the arguments are a serialized
//! `VerifySignatureArguments`, the answer a serialized `VerifySignatureResult`.
//!
//! Envoy's order, reproduced here:
//! 1. the arguments do not parse as the proto, or carry both `public_key` and `public_key_pem`,
//!    or neither ⇒ `BadArgument`, no result;
//! 2. a hash other than sha1/sha224/sha256/sha384/sha512 (ASCII case-insensitive) ⇒ Ok,
//!    `false`, "<hash as given> is not supported." (before the key is looked at);
//! 3. a key BoringSSL's `EVP_parse_public_key` / `PEM_read_bio_PUBKEY` does not take, or one
//!    `EVP_DigestVerifyInit` refuses with a digest (Ed25519, X25519, DSA, unknown algorithms)
//!    ⇒ Ok, `false`, "Failed to initialize digest verify.";
//! 4. `EVP_DigestVerify`: RSA keys verify PKCS#1 v1.5, EC keys a DER ECDSA signature; a failure
//!    ⇒ Ok, `false`, "Failed to verify digest. Error code: 0" (BoringSSL returns 0 on failure).
//!
//! Not modelled: EC keys on P-224 and P-521 (BoringSSL verifies them; here they answer as in 3).

use crate::envoy_model::protobuf::{read_len, read_tag, skip_field};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use sha2::Digest;
use spki::der::{Decode, SliceReader, Tagged};
use spki::SubjectPublicKeyInfoRef;

use crate::Status;

const NOT_INITIALIZED: &str = "Failed to initialize digest verify.";
const NOT_VERIFIED: &str = "Failed to verify digest. Error code: 0";
/// BoringSSL's `OPENSSL_RSA_MAX_MODULUS_BITS`.
const RSA_MAX_BITS: usize = 16384;

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// The foreign function: the status and, when Envoy allocates one, the serialized result.
pub(super) fn call(arguments: &[u8]) -> (Status, Option<Vec<u8>>) {
    match verify(arguments) {
        Ok(outcome) => (Status::OK, Some(encode_result(&outcome))),
        Err(status) => (status, None),
    }
}

/// `Ok(Ok(()))` verified; `Ok(Err(message))` the `error` of a `false` result.
fn verify(arguments: &[u8]) -> Result<Result<(), String>, Status> {
    let args = parse_arguments(arguments).ok_or(Status::BAD_ARGUMENT)?;
    let key = match (args.public_key.is_empty(), args.public_key_pem.is_empty()) {
        (false, true) => KeySource::Der(&args.public_key),
        (true, false) => KeySource::Pem(&args.public_key_pem),
        _ => return Err(Status::BAD_ARGUMENT),
    };
    let Some(hash) = Hash::from_name(&args.hash_function) else {
        return Ok(Err(format!("{} is not supported.", args.hash_function)));
    };
    let Some(key) = key.parse() else {
        return Ok(Err(NOT_INITIALIZED.to_string()));
    };
    Ok(if key.verify(hash, &args.signature, &args.text) {
        Ok(())
    } else {
        Err(NOT_VERIFIED.to_string())
    })
}

#[derive(Default)]
struct Arguments {
    hash_function: String,
    public_key: Vec<u8>,
    signature: Vec<u8>,
    text: Vec<u8>,
    public_key_pem: String,
}

// The wire format as C++ `ParseFromString` reads it: envoy_model::protobuf.
/// `ParseFromString` of a proto3 `VerifySignatureArguments`: the last occurrence of a field wins,
/// a known field with another wire type and unknown fields are skipped, string fields must be
/// UTF-8, and malformed wire data fails.
fn parse_arguments(mut buf: &[u8]) -> Option<Arguments> {
    let mut args = Arguments::default();
    while !buf.is_empty() {
        let (field, wire) = read_tag(&mut buf)?;
        if wire == 2 && (1..=5).contains(&field) {
            let bytes = read_len(&mut buf)?.to_vec();
            match field {
                1 => args.hash_function = String::from_utf8(bytes).ok()?,
                2 => args.public_key = bytes,
                3 => args.signature = bytes,
                4 => args.text = bytes,
                _ => args.public_key_pem = String::from_utf8(bytes).ok()?,
            }
        } else {
            skip_field(&mut buf, field, wire, 0)?;
        }
    }
    Some(args)
}

fn encode_result(outcome: &Result<(), String>) -> Vec<u8> {
    // proto3: default values (false, "") are not written.
    match outcome {
        Ok(()) => vec![0x08, 0x01],
        Err(message) => {
            let mut out = vec![0x12];
            let mut len = message.len() as u64;
            while len >= 0x80 {
                out.push((len as u8) | 0x80);
                len >>= 7;
            }
            out.push(len as u8);
            out.extend_from_slice(message.as_bytes());
            out
        }
    }
}

#[derive(Clone, Copy)]
enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_name(name: &str) -> Option<Hash> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sha1" => Hash::Sha1,
            "sha224" => Hash::Sha224,
            "sha256" => Hash::Sha256,
            "sha384" => Hash::Sha384,
            "sha512" => Hash::Sha512,
            _ => return None,
        })
    }

    fn digest(self, text: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text)
                .as_ref()
                .to_vec(),
            Hash::Sha224 => sha2::Sha224::digest(text).to_vec(),
            Hash::Sha256 => sha2::Sha256::digest(text).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(text).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(text).to_vec(),
        }
    }

    /// The PKCS#1 v1.5 padding scheme (DigestInfo prefix) for this hash.
    fn pkcs1v15(self) -> Pkcs1v15Sign {
        match self {
            // sha2 0.10 has no SHA-1: its DigestInfo prefix (RFC 8017 §9.2 note 1) written out.
            Hash::Sha1 => Pkcs1v15Sign {
                hash_len: Some(20),
                prefix: Box::new([
                    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00,
                    0x04, 0x14,
                ]),
            },
            Hash::Sha224 => Pkcs1v15Sign::new::<sha2::Sha224>(),
            Hash::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
            Hash::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
            Hash::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
        }
    }
}

enum KeySource<'a> {
    Der(&'a [u8]),
    Pem(&'a str),
}

enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl KeySource<'_> {
    fn parse(&self) -> Option<PublicKey> {
        match self {
            KeySource::Der(der) => parse_spki(der),
            KeySource::Pem(pem) => parse_spki(&pem_public_key(pem)?),
        }
    }
}

/// `PEM_read_bio_PUBKEY`: the first `PUBLIC KEY` block (blocks of other types, such as
/// `RSA PUBLIC KEY`, and text around them are skipped).
fn pem_public_key(pem: &str) -> Option<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let body = pem.split_once(BEGIN)?.1;
    let body = body.split_once(END)?.0;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// `EVP_parse_public_key`: one DER SubjectPublicKeyInfo; bytes after it are ignored (Envoy does
/// not check that the key used all its input), a key of a type that cannot verify with a digest
/// is `None` like one that does not parse.
fn parse_spki(der: &[u8]) -> Option<PublicKey> {
    let mut reader = SliceReader::new(der).ok()?;
    let spki = SubjectPublicKeyInfoRef::decode(&mut reader).ok()?;
    // BoringSSL requires a bit string without unused bits.
    let key = spki.subject_public_key.as_bytes()?;
    let oid = spki.algorithm.oid.to_string();
    let params = spki.algorithm.parameters;
    if oid == OID_RSA {
        // RFC 3279 §2.3.1: the parameters are NULL, and BoringSSL insists.
        let null = params?;
        if null.tag() != spki::der::Tag::Null || !null.value().is_empty() {
            return None;
        }
        let rsa = pkcs1::RsaPublicKey::from_der(key).ok()?;
        let n = BigUint::from_bytes_be(rsa.modulus.as_bytes());
        let e = BigUint::from_bytes_be(rsa.public_exponent.as_bytes());
        return RsaPublicKey::new_with_max_size(n, e, RSA_MAX_BITS)
            .ok()
            .map(PublicKey::Rsa);
    }
    if oid == OID_EC {
        let curve = params?
            .decode_as::<spki::ObjectIdentifier>()
            .ok()?
            .to_string();
        return match curve.as_str() {
            OID_P256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(key)
                .ok()
                .map(PublicKey::P256),
            OID_P384 => p384::ecdsa::VerifyingKey::from_sec1_bytes(key)
                .ok()
                .map(PublicKey::P384),
            _ => None,
        };
    }
    None
}

impl PublicKey {
    fn verify(&self, hash: Hash, signature: &[u8], text: &[u8]) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        let digest = hash.digest(text);
        match self {
            PublicKey::Rsa(key) => {
                // BoringSSL: a signature must be exactly the modulus' length.
                signature.len() == key.size()
                    && key.verify(hash.pkcs1v15(), &digest, signature).is_ok()
            }
            // ECDSA over the digest truncated or zero-extended to the order's length (SEC 1
            // §4.1.4 step 5, as BoringSSL's `ECDSA_do_verify`); the signature is strict DER.
            PublicKey::P256(key) => p256::ecdsa::DerSignature::from_bytes(signature)
                .is_ok_and(|sig| key.verify_prehash(&digest, &sig).is_ok()),
            PublicKey::P384(key) => p384::ecdsa::DerSignature::from_bytes(signature)
                .is_ok_and(|sig| key.verify_prehash(&digest, &sig).is_ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashSigner;

    const P256_SPKI_PREFIX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";

    fn field(out: &mut Vec<u8>, number: u8, value: &[u8]) {
        out.push(number << 3 | 2);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    }

    /// A P-256 key (fixed scalar), its SubjectPublicKeyInfo, and a DER signature over `text`.
    fn p256_fixture(text: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let key = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
        let point = key.verifying_key().to_sec1_point(false);
        let mut spki = hex_decode(P256_SPKI_PREFIX);
        spki.extend_from_slice(point.as_bytes());
        let sig: p256::ecdsa::Signature = key.sign_prehash(&sha2::Sha256::digest(text)).unwrap();
        (spki, sig.to_der().as_bytes().to_vec())
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn args(hash: &str, key: &[u8], sig: &[u8], text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        field(&mut out, 1, hash.as_bytes());
        field(&mut out, 2, key);
        field(&mut out, 3, sig);
        field(&mut out, 4, text);
        out
    }

    fn false_with(error: &str) -> (Status, Option<Vec<u8>>) {
        (Status::OK, Some(encode_result(&Err(error.to_string()))))
    }

    #[test]
    fn a_valid_p256_signature_verifies_and_a_tampered_text_does_not() {
        let (key, sig) = p256_fixture(b"text");
        assert_eq!(
            call(&args("sha256", &key, &sig, b"text")),
            (Status::OK, Some(vec![0x08, 0x01]))
        );
        assert_eq!(
            call(&args("sha256", &key, &sig, b"texT")),
            false_with(NOT_VERIFIED)
        );
    }

    #[test]
    fn the_hash_is_checked_before_the_key_and_keeps_its_case() {
        assert_eq!(
            call(&args("MD5", b"garbage", b"", b"")),
            false_with("MD5 is not supported.")
        );
    }

    #[test]
    fn keys_that_do_not_parse_are_a_false_result_not_bad_argument() {
        assert_eq!(
            call(&args("sha256", b"garbage", b"", b"")),
            false_with(NOT_INITIALIZED)
        );
    }

    #[test]
    fn missing_or_doubled_keys_and_malformed_protos_are_bad_argument() {
        let (key, sig) = p256_fixture(b"text");
        let mut both = args("sha256", &key, &sig, b"text");
        field(&mut both, 5, b"-----BEGIN PUBLIC KEY-----");
        for bad in [
            both,
            Vec::new(),
            vec![0xff],
            vec![0x0a, 0x05, b's'],       // length past the end
            vec![0x0a, 0x01, 0xff],       // hash_function not UTF-8
            vec![0x00, 0x00],             // field number 0
            vec![0x0c],                   // end group at top level
            vec![0x0e, 0x00],             // wire type 6
            vec![0x0b, 0x08, 0x01, 0x1c], // group ended by another field number
        ] {
            assert_eq!(call(&bad), (Status::BAD_ARGUMENT, None), "{bad:02x?}");
        }
    }

    #[test]
    fn unknown_fields_groups_and_wrong_wire_types_are_skipped() {
        let (key, sig) = p256_fixture(b"text");
        let mut a = args("sha256", &key, &sig, b"text");
        // field 9 varint, field 10 fixed64, field 11 fixed32, group 12 holding a varint,
        // field 1 as a varint (a known field with another wire type is an unknown field).
        a.extend_from_slice(&[0x48, 0x2a, 0x51, 0, 0, 0, 0, 0, 0, 0, 0, 0x5d, 0, 0, 0, 0]);
        a.extend_from_slice(&[0x63, 0x08, 0x01, 0x64, 0x08, 0x01]);
        assert_eq!(call(&a), (Status::OK, Some(vec![0x08, 0x01])));
    }

    #[test]
    fn the_last_occurrence_of_a_field_wins() {
        let (key, sig) = p256_fixture(b"text");
        let mut a = args("md5", &key, &sig, b"text");
        field(&mut a, 1, b"sha256");
        assert_eq!(call(&a), (Status::OK, Some(vec![0x08, 0x01])));
    }

    #[test]
    fn pem_keys_are_read_from_the_first_public_key_block() {
        use base64::Engine as _;
        let (key, sig) = p256_fixture(b"text");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&key);
        let pem = format!(
            "junk\n-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n\
             -----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &b64[..40],
            &b64[40..]
        );
        let mut a = Vec::new();
        field(&mut a, 1, b"sha256");
        field(&mut a, 3, &sig);
        field(&mut a, 4, b"text");
        let mut p = a.clone();
        p.push(5 << 3 | 2);
        p.extend_from_slice(&[(pem.len() as u8) | 0x80, (pem.len() >> 7) as u8]);
        p.extend_from_slice(pem.as_bytes());
        assert_eq!(call(&p), (Status::OK, Some(vec![0x08, 0x01])));
    }

    #[test]
    fn long_errors_have_multi_byte_lengths() {
        let long = "x".repeat(200);
        let encoded = encode_result(&Err(long.clone()));
        assert_eq!(&encoded[..3], &[0x12, 0xc8, 0x01]);
        assert_eq!(&encoded[3..], long.as_bytes());
    }
}
