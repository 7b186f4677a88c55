//! Envoy's `verify_signature` foreign function, in the harness AND in real Envoy 1.40, through the
//! same test module (tests/modules/verify): every case must give the same status and the same
//! serialized `VerifySignatureResult` in both, and both must equal what the case expects (the
//! observations of issue #14 and Envoy's foreign.cc / crypto utility_impl.cc). Keys and signatures
//! are generated here; Envoy missing fails the Envoy test.

use std::path::PathBuf;

use meshward_harness::{FilterSpec, Host, Request};
use meshward_rig::{self as envoy, EchoUpstream, Envoy, EnvoyConfig, WasmFilter};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use ring::rand::SystemRandom;
use ring::signature::{self as rs, KeyPair};
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::{Pkcs1v15Sign, Pss, RsaPrivateKey};
use sha2::Digest;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const BAD_ARGUMENT: u32 = 2;
const NOT_INITIALIZED: &str = "Failed to initialize digest verify.";
const NOT_VERIFIED: &str = "Failed to verify digest. Error code: 0";

fn verify_module() -> PathBuf {
    meshward_tests::wasm("meshward_test_verify")
}

/// What a call returned: the status and, if the host handed back a buffer, the decoded result.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u32,
    result: Option<(bool, String)>,
}

fn ok(result: bool, error: &str) -> Answer {
    Answer {
        status: OK,
        result: Some((result, error.to_string())),
    }
}

fn status(status: u32) -> Answer {
    Answer {
        status,
        result: None,
    }
}

struct Case {
    name: &'static str,
    function: &'static str,
    args: Vec<u8>,
    expect: Answer,
}

/// A protobuf field of wire type 2.
fn field(out: &mut Vec<u8>, number: u8, value: &[u8]) {
    out.push(number << 3 | 2);
    let mut len = value.len();
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(value);
}

/// A serialized `VerifySignatureArguments` (empty fields omitted, as proto3 serializes them).
fn args(hash: &str, der: &[u8], signature: &[u8], text: &[u8], pem: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in [
        (1, hash.as_bytes()),
        (2, der),
        (3, signature),
        (4, text),
        (5, pem.as_bytes()),
    ] {
        if !v.is_empty() {
            field(&mut out, n, v);
        }
    }
    out
}

/// Decodes a `VerifySignatureResult` (fields 1: bool, 2: string; both single-byte tags).
fn decode_result(bytes: &[u8]) -> (bool, String) {
    let (mut result, mut error, mut i) = (false, String::new(), 0);
    while i < bytes.len() {
        match bytes[i] {
            0x08 => {
                result = bytes[i + 1] != 0;
                i += 2;
            }
            0x12 => {
                let (mut len, mut shift) = (0usize, 0);
                i += 1;
                loop {
                    len |= ((bytes[i] & 0x7f) as usize) << shift;
                    i += 1;
                    if bytes[i - 1] & 0x80 == 0 {
                        break;
                    }
                    shift += 7;
                }
                error = String::from_utf8(bytes[i..i + len].to_vec()).unwrap();
                i += len;
            }
            t => panic!("unexpected tag {t:#x} in {bytes:02x?}"),
        }
    }
    (result, error)
}

fn answer(status: Option<&str>, result: Option<&str>) -> Answer {
    Answer {
        status: status.expect("x-verify-status").parse().unwrap(),
        result: result.map(|h| decode_result(&hex::decode(h).unwrap())),
    }
}

fn sha1(text: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text)
        .as_ref()
        .to_vec()
}

fn cases() -> Vec<Case> {
    let text = b"header.payload".to_vec();
    let tampered = b"header.payloaD".to_vec();
    let mut rng = rsa::rand_core::OsRng;
    let rsa_key = RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let rsa_pub = rsa_key.to_public_key();
    let rsa_der = rsa_pub.to_public_key_der().unwrap().as_bytes().to_vec();
    let rsa_pem = rsa_pub.to_public_key_pem(LineEnding::LF).unwrap();
    let rsa_pkcs1_der = rsa_pub.to_pkcs1_der().unwrap().as_bytes().to_vec();
    let rsa_pkcs1_pem = rsa_pub.to_pkcs1_pem(LineEnding::LF).unwrap();
    let rsa_sign = |scheme: Pkcs1v15Sign, digest: &[u8]| rsa_key.sign(scheme, digest).unwrap();
    let rs256 = rsa_sign(
        Pkcs1v15Sign::new::<sha2::Sha256>(),
        &sha2::Sha256::digest(&text),
    );
    let rs384 = rsa_sign(
        Pkcs1v15Sign::new::<sha2::Sha384>(),
        &sha2::Sha384::digest(&text),
    );
    let rs512 = rsa_sign(
        Pkcs1v15Sign::new::<sha2::Sha512>(),
        &sha2::Sha512::digest(&text),
    );
    let rs1 = rsa_sign(
        Pkcs1v15Sign {
            hash_len: Some(20),
            prefix: vec![
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ]
            .into(),
        },
        &sha1(&text),
    );
    let ps256 = rsa_key
        .sign_with_rng(
            &mut rng,
            Pss::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(&text),
        )
        .unwrap();

    let sys = SystemRandom::new();
    let ec = |alg: &'static rs::EcdsaSigningAlgorithm,
              fixed: &'static rs::EcdsaSigningAlgorithm| {
        let pkcs8 = rs::EcdsaKeyPair::generate_pkcs8(alg, &sys).unwrap();
        let der_pair = rs::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &sys).unwrap();
        let raw_pair = rs::EcdsaKeyPair::from_pkcs8(fixed, pkcs8.as_ref(), &sys).unwrap();
        let point = der_pair.public_key().as_ref().to_vec();
        let der_sig = der_pair.sign(&sys, &text).unwrap().as_ref().to_vec();
        let raw_sig = raw_pair.sign(&sys, &text).unwrap().as_ref().to_vec();
        (point, der_sig, raw_sig)
    };
    let (p256_point, es256, es256_raw) = ec(
        &rs::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rs::ECDSA_P256_SHA256_FIXED_SIGNING,
    );
    let (p384_point, es384, _) = ec(
        &rs::ECDSA_P384_SHA384_ASN1_SIGNING,
        &rs::ECDSA_P384_SHA384_FIXED_SIGNING,
    );
    // SubjectPublicKeyInfo prefixes (id-ecPublicKey + named curve, uncompressed point).
    let spki = |prefix: &str, point: &[u8]| [hex::decode(prefix).unwrap(), point.to_vec()].concat();
    let p256_der = spki(
        "3059301306072a8648ce3d020106082a8648ce3d030107034200",
        &p256_point,
    );
    let p384_der = spki(
        "3076301006072a8648ce3d020106052b81040022036200",
        &p384_point,
    );
    let p256_pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64_lines(&p256_der)
    );

    // P-256 over digests longer and shorter than the order (truncated / zero-extended).
    let p256_key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let p256_key_der = spki(
        "3059301306072a8648ce3d020106082a8648ce3d030107034200",
        p256_key.verifying_key().to_sec1_point(false).as_bytes(),
    );
    let sign_prehash = |digest: &[u8]| {
        let sig: p256::ecdsa::Signature = p256_key.sign_prehash(digest).unwrap();
        sig.to_der().as_bytes().to_vec()
    };
    let p256_sha512 = sign_prehash(&sha2::Sha512::digest(&text));
    let p256_sha1 = sign_prehash(&sha1(&text));

    let ed25519 = rs::Ed25519KeyPair::generate_pkcs8(&sys).unwrap();
    let ed25519 = rs::Ed25519KeyPair::from_pkcs8(ed25519.as_ref()).unwrap();
    let ed_der = spki("302a300506032b6570032100", ed25519.public_key().as_ref());
    let ed_sig = ed25519.sign(&text).as_ref().to_vec();

    let garbage = b"not a key at all".to_vec();
    let mut rsa_der_trailing = rsa_der.clone();
    rsa_der_trailing.extend_from_slice(b"trailing");
    let mut unknown_field = args("sha256", &rsa_der, &rs256, &text, "");
    unknown_field.extend_from_slice(&[0x48, 0x2a]); // field 9, varint 42
    let mut hash_as_varint = args("", &rsa_der, &rs256, &text, "");
    hash_as_varint.extend_from_slice(&[0x08, 0x01]); // field 1 with the wrong wire type
    let mut bad_utf8 = Vec::new();
    field(&mut bad_utf8, 1, b"sha256\xff");
    bad_utf8.extend_from_slice(&args("", &rsa_der, &rs256, &text, ""));
    let mut truncated = args("sha256", &rsa_der, &rs256, &text, "");
    truncated.pop();

    let c = |name, args, expect| Case {
        name,
        function: "verify_signature",
        args,
        expect,
    };
    let t = &text;
    vec![
        c(
            "rsa sha256",
            args("sha256", &rsa_der, &rs256, t, ""),
            ok(true, ""),
        ),
        c(
            "rsa SHA256 in capitals",
            args("SHA256", &rsa_der, &rs256, t, ""),
            ok(true, ""),
        ),
        c(
            "rsa sha384",
            args("sha384", &rsa_der, &rs384, t, ""),
            ok(true, ""),
        ),
        c(
            "rsa sha512",
            args("sha512", &rsa_der, &rs512, t, ""),
            ok(true, ""),
        ),
        c(
            "rsa sha1",
            args("sha1", &rsa_der, &rs1, t, ""),
            ok(true, ""),
        ),
        c(
            "rsa tampered text",
            args("sha256", &rsa_der, &rs256, &tampered, ""),
            ok(false, NOT_VERIFIED),
        ),
        c(
            "rsa wrong hash",
            args("sha384", &rsa_der, &rs256, t, ""),
            ok(false, NOT_VERIFIED),
        ),
        c(
            "rsa short signature",
            args("sha256", &rsa_der, &rs256[1..], t, ""),
            ok(false, NOT_VERIFIED),
        ),
        c(
            "rsa-pss signature",
            args("sha256", &rsa_der, &ps256, t, ""),
            ok(false, NOT_VERIFIED),
        ),
        c(
            "rsa pem",
            args("sha256", &[], &rs256, t, &rsa_pem),
            ok(true, ""),
        ),
        c(
            "rsa pkcs1 der key",
            args("sha256", &rsa_pkcs1_der, &rs256, t, ""),
            ok(false, NOT_INITIALIZED),
        ),
        c(
            "rsa pkcs1 pem key",
            args("sha256", &[], &rs256, t, &rsa_pkcs1_pem),
            ok(false, NOT_INITIALIZED),
        ),
        c(
            "rsa spki with trailing bytes",
            args("sha256", &rsa_der_trailing, &rs256, t, ""),
            ok(true, ""),
        ),
        c(
            "p256 der signature",
            args("sha256", &p256_der, &es256, t, ""),
            ok(true, ""),
        ),
        c(
            "p256 raw r||s signature",
            args("sha256", &p256_der, &es256_raw, t, ""),
            ok(false, NOT_VERIFIED),
        ),
        c(
            "p256 tampered text",
            args("sha256", &p256_der, &es256, &tampered, ""),
            ok(false, NOT_VERIFIED),
        ),
        c(
            "p256 pem",
            args("sha256", &[], &es256, t, &p256_pem),
            ok(true, ""),
        ),
        c(
            "p256 sha512 (truncated digest)",
            args("sha512", &p256_key_der, &p256_sha512, t, ""),
            ok(true, ""),
        ),
        c(
            "p256 sha1 (short digest)",
            args("sha1", &p256_key_der, &p256_sha1, t, ""),
            ok(true, ""),
        ),
        c(
            "p384 der signature",
            args("sha384", &p384_der, &es384, t, ""),
            ok(true, ""),
        ),
        c(
            "ed25519 key",
            args("sha256", &ed_der, &ed_sig, t, ""),
            ok(false, NOT_INITIALIZED),
        ),
        c(
            "garbage key",
            args("sha256", &garbage, &rs256, t, ""),
            ok(false, NOT_INITIALIZED),
        ),
        c(
            "md5",
            args("md5", &rsa_der, &rs256, t, ""),
            ok(false, "md5 is not supported."),
        ),
        c(
            "MD5 keeps its case",
            args("MD5", &rsa_der, &rs256, t, ""),
            ok(false, "MD5 is not supported."),
        ),
        c(
            "md5 before the key",
            args("md5", &garbage, &rs256, t, ""),
            ok(false, "md5 is not supported."),
        ),
        c(
            "no hash",
            args("", &rsa_der, &rs256, t, ""),
            ok(false, " is not supported."),
        ),
        c(
            "der and pem",
            args("sha256", &rsa_der, &rs256, t, &rsa_pem),
            status(BAD_ARGUMENT),
        ),
        c(
            "no key",
            args("sha256", &[], &rs256, t, ""),
            status(BAD_ARGUMENT),
        ),
        c("empty arguments", Vec::new(), status(BAD_ARGUMENT)),
        c("not a proto", vec![0xff], status(BAD_ARGUMENT)),
        c("truncated proto", truncated, status(BAD_ARGUMENT)),
        c("unknown field", unknown_field, ok(true, "")),
        c(
            "known field, wrong wire type",
            hash_as_varint,
            ok(false, " is not supported."),
        ),
        c("hash not utf-8", bad_utf8, status(BAD_ARGUMENT)),
        Case {
            name: "unregistered function",
            function: "no_such_function",
            args: Vec::new(),
            expect: status(NOT_FOUND),
        },
    ]
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    b64.as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

fn check(world: &str, cases: &[Case], answers: &[Answer]) {
    let wrong: Vec<String> = cases
        .iter()
        .zip(answers)
        .filter(|(c, a)| c.expect != **a)
        .map(|(c, a)| format!("{}: expected {:?}, got {:?}", c.name, c.expect, a))
        .collect();
    assert!(wrong.is_empty(), "{world}:\n{}", wrong.join("\n"));
}

fn in_harness(cases: &[Case]) -> Vec<Answer> {
    let host = Host::builder()
        .filter(
            FilterSpec::from_file(verify_module())
                .unwrap()
                .name("verify"),
        )
        .build()
        .unwrap();
    cases
        .iter()
        .map(|c| {
            let out = host.send(
                &Request::get("/")
                    .header("x-verify-function", c.function)
                    .header("x-verify-args", &hex::encode(&c.args)),
            );
            assert_eq!(out.status(), 200, "{}", c.name);
            answer(
                out.response.header("x-verify-status"),
                out.response.header("x-verify-result"),
            )
        })
        .collect()
}

fn in_envoy(cases: &[Case]) -> Vec<Answer> {
    let upstream = EchoUpstream::start().unwrap();
    let config =
        EnvoyConfig::new(upstream.addr()).filter(WasmFilter::new("verify", verify_module(), ""));
    let envoy = Envoy::start(&config).unwrap();
    let client = envoy.client();
    cases
        .iter()
        .map(|c| {
            let r = client
                .send(
                    &envoy::Request::get("/")
                        .header("x-verify-function", c.function)
                        .header("x-verify-args", hex::encode(&c.args)),
                )
                .unwrap();
            assert_eq!(r.status, 200, "{}", c.name);
            answer(r.header("x-verify-status"), r.header("x-verify-result"))
        })
        .collect()
}

#[test]
fn verify_signature_in_the_harness() {
    let cases = cases();
    check("harness", &cases, &in_harness(&cases));
}

#[test]
fn verify_signature_in_envoy() {
    let cases = cases();
    check("envoy", &cases, &in_envoy(&cases));
}

/// Both worlds on the same keys and signatures (the two tests above use fresh keys each).
#[test]
fn verify_signature_harness_equals_envoy() {
    let cases = cases();
    let harness = in_harness(&cases);
    let envoy = in_envoy(&cases);
    for ((c, h), e) in cases.iter().zip(&harness).zip(&envoy) {
        assert_eq!(h, e, "{}: harness and Envoy differ", c.name);
    }
}
