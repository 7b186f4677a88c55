#!/usr/bin/env python3
"""Tokens of the second issuer of examples/mesh (the partner IdP, https://partners.example.net),
signed by Python `cryptography`, independent of meshward's filters.

The partner IdP signs with the fixture EC key tests/fixtures/jwt/keys/ec-1.pem under its own kid
(`partner-ec-1`), so the inline JWKS of istio-system/partner-idp (resources/istio-system/
mesh-defaults.yaml) is that key's public half. The first issuer (https://idp.example.com) needs no
new tokens: the scenario files use tests/fixtures/jwt/tokens.json (rs256_alice, es256_bob, ...).

Run: python3 examples/mesh/tokens/gen.py  (any Python with `cryptography`, e.g.
`python3 -m venv /tmp/genvenv && /tmp/genvenv/bin/pip install cryptography`).
Writes tokens.json and partner-jwks.json next to this script. The keys are the fixture keys, so a
rerun gives the same JWKS; ES256 signatures are randomized, so tokens change on every run (paste
the new ones into the scenario files, or keep the old ones: they stay valid until 2100).
"""
import base64
import json
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = os.path.join(HERE, "..", "..", "..", "tests", "fixtures", "jwt", "keys")
PARTNER_ISS = "https://partners.example.net"
PARTNER_KID = "partner-ec-1"
EXP_2100 = 4102444800


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load(name):
    with open(os.path.join(KEYS, name + ".pem"), "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


ec1 = load("ec-1")
rsa1 = load("rsa-1")  # the first issuer's key, for the forged token below


def es256(key, data: bytes) -> bytes:
    # JWS wants r||s (32 bytes each), not the DER that `cryptography` returns.
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def rs256(key, data: bytes) -> bytes:
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def jwt(alg, signer, key, kid, claims):
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    signing_input = b64(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64(json.dumps(claims, separators=(",", ":")).encode())
    return signing_input + "." + b64(signer(key, signing_input.encode()))


def partner(sub, **extra):
    c = {"iss": PARTNER_ISS, "sub": sub, "aud": "partner-api", "exp": EXP_2100,
         "iat": 1700000000, "partner": "acme", "roles": ["order-writer"]}
    c.update(extra)
    return c


tokens = {}


def add(name, token, note):
    tokens[name] = {"token": token, "note": note}


add("partner_writer", jwt("ES256", es256, ec1, PARTNER_KID, partner("acme-sync")),
    "partner IdP, sub acme-sync, aud partner-api, roles [order-writer]")
add("partner_reader", jwt("ES256", es256, ec1, PARTNER_KID,
                          partner("acme-report", roles=["order-reader"])),
    "partner IdP, sub acme-report, aud partner-api, roles [order-reader]")
add("partner_expired", jwt("ES256", es256, ec1, PARTNER_KID, partner("acme-sync", exp=1)),
    "partner_writer's claims with exp = 1 (401 Jwt is expired)")
add("partner_wrong_aud", jwt("ES256", es256, ec1, PARTNER_KID, partner("acme-sync", aud="orders")),
    "partner IdP with aud orders, not partner-api (403 Audiences in Jwt are not allowed)")
add("partner_forged_rsa1", jwt("RS256", rs256, rsa1, "rsa-1", partner("acme-sync")),
    "claims the partner issuer but is signed with the first IdP's rsa-1 key, a kid the partner "
    "JWKS lacks (401 Jwks doesn't have key to match kid or alg from Jwt)")

pub = ec1.public_key().public_numbers()
jwks = {"keys": [{"kty": "EC", "kid": PARTNER_KID, "use": "sig", "alg": "ES256", "crv": "P-256",
                  "x": b64(pub.x.to_bytes(32, "big")), "y": b64(pub.y.to_bytes(32, "big"))}]}


def write(name, value):
    with open(os.path.join(HERE, name), "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


write("partner-jwks.json", jwks)
write("tokens.json", {"issuer": PARTNER_ISS, "tokens": tokens})
print("inline jwks for istio-system/partner-idp:")
print(json.dumps(jwks, separators=(",", ":"), sort_keys=True))
