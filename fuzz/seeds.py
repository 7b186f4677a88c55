#!/usr/bin/env python3
"""Regenerate fuzz/corpus/<target>/ from the test suites (run from anywhere; deterministic).

Seeds: request paths and SPIFFE IDs from tests/scenarios/**.yaml and the attack spellings of
issue 12; filter configs from the scenario chains and policies/; tokens and JWKS from
tests/fixtures/jwt and the Wycheproof JWS/JWK vectors (Apache-2.0, /work/shared/testdata or
$WYCHEPROOF_DIR, optional); identity JSON from the token payloads. Small files only: the whole
corpus stays well under 2 MB. libFuzzer grows its own working corpus in fuzz/target/corpus/
(scripts/fuzz.sh), so this directory only changes when this script runs.
"""
import base64
import hashlib
import json
import os
import pathlib
import shutil
import struct

import yaml

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"
WYCHEPROOF = pathlib.Path(os.environ.get("WYCHEPROOF_DIR", "/work/shared/testdata/wycheproof"))
MAX_SEED = 8192

seeds = {}


def add(target, data):
    if isinstance(data, str):
        data = data.encode()
    if len(data) <= MAX_SEED:
        seeds.setdefault(target, set()).add(bytes(data))


def walk(node, fn):
    if isinstance(node, dict):
        for k, v in node.items():
            fn(k, v)
            walk(v, fn)
    elif isinstance(node, list):
        for v in node:
            walk(v, fn)


FILTER_BYTE = {"header-limits": 0, "spiffe-authz": 1, "jwt-authn": 2, "rate-limit": 3}

# Scenario files: paths, SPIFFE IDs, chain configs.
for f in sorted((ROOT / "tests" / "scenarios").rglob("*.yaml")):
    try:
        doc = yaml.safe_load(f.read_text())
    except yaml.YAMLError:
        continue

    def visit(k, v):
        if k == "path" and isinstance(v, str):
            add("path_normalize", v)
        if isinstance(v, str) and v.startswith("spiffe://"):
            add("spiffe_id", v)
        if k == "peer" and isinstance(v, str):
            add("spiffe_id", v)

    walk(doc, visit)
    for link in (doc or {}).get("chain", []) if isinstance(doc, dict) else []:
        byte = FILTER_BYTE.get(link.get("filter"))
        if byte is not None and "config" in link:
            add("config_parse", bytes([byte]) + json.dumps(link["config"]).encode())

for d in sorted((ROOT / "policies").iterdir()):
    byte = FILTER_BYTE.get(d.name)
    for p in sorted(d.glob("*.json")):
        if byte is not None and p.name != "schema.json":
            add("config_parse", bytes([byte]) + p.read_bytes())
            for s in json.dumps(json.loads(p.read_text())).split('"'):
                if s.startswith("spiffe://"):
                    add("spiffe_id", s)

# Issue 12's path spellings (finding 1, 6) and the classic CVE ones.
for p in [
    "/public/..;/admin", "/public/%2e%2e;/admin", "/public/.;/../admin", "/admin;x",
    "/admin;x/users", "/admin%3bx", "//admin/users", "/./admin/users", "/%61dmin",
    "/%2e%2e/admin", "/a/%2E./admin", "/admin%2Fx", "/admin%5cx", "/a\\b", "/x/../admin",
    "/admin/", "/%61pi/x", "/administrator", "/a?b=c#d", "/a#b?c", "/%25%32%65", "/%7e%7E",
    "/a/b/./c/../../d//e;f=g/h?q=1",
]:
    add("path_normalize", p)
for s in [
    "spiffe://cluster.local/ns/default/sa/frontend", "spiffe://td", "spiffe://td/",
    "spiffe://TD/ns/a/sa/b", "spiffe://td/ns/a/sa/b/c", "spiffe://td//x", "spiffe://td/./x",
    "spiffe://td/ns/a%2Fb/sa/c", "spiffe://td:443/x", "spiffe://user@td/x", "spiffe:///x",
]:
    add("spiffe_id", s)

# header_limits: the target's own encoding (flags, limits, then tag-prefixed entries).
def hl(flags, kb_bytes, count, value_max, path_max, entries):
    out = bytes([flags]) + struct.pack("<H", kb_bytes) + bytes([count])
    if flags & 1:
        out += struct.pack("<H", value_max)
    if flags & 2:
        out += struct.pack("<H", path_max)
    for tag, name, value in entries:
        out += bytes([tag])
        if tag & 0x0F >= 8:
            out += name + b"\xff"
        out += value + (b"" if tag & 0x80 else b"\xff")
    return out


add("header_limits", hl(0x23, 2048, 20, 100, 50, [(0, b"", b"/a"), (1, b"", b"example.com"), (8, b"x-tab", b"a\tb")]))
add("header_limits", hl(0x08, 4000, 30, 0, 0, [(3, b"", b"1"), (7, b"", b"2"), (8, b"x_y", b"\x01")]))
add("header_limits", hl(0x04, 100, 3, 0, 0, [(0x80, b"", struct.pack("<H", 300)), (4, b"", b"v\x7f")]))
add("header_limits", hl(0x20, 4095, 39, 0, 0, [(8, b"a\rb", b"c"), (4, b"", b"\x00")]))

# Tokens, JWKS and identity payloads.
fixtures = ROOT / "tests" / "fixtures" / "jwt"
tokens = json.loads((fixtures / "tokens.json").read_text())["tokens"]


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


for t in tokens.values():
    add("jwt_token", t["token"])
    parts = t["token"].split(".")
    if len(parts) == 3:
        try:
            add("identity", b64d(parts[1]))
        except Exception:
            pass
for p in ["jwks.json", "jwks-rotated.json", "jwks-inline-hs.json"]:
    add("jwks", b"\x00" + (fixtures / p).read_bytes())
    add("jwks", b"\x01" + (fixtures / p).read_bytes())
add("identity", json.dumps({"principal": "https://idp/alice", "iss": "https://idp", "sub": "alice",
                            "aud": ["orders"], "claims": {"iss": "https://idp", "sub": "alice",
                                                          "n": 1.5, "deep": {"a": [1, {"b": None}]}}}))

if (WYCHEPROOF / "json_web_signature_test.json").exists():
    doc = json.loads((WYCHEPROOF / "json_web_signature_test.json").read_text())
    for g in doc["testGroups"]:
        for t in g["tests"][:6]:
            if isinstance(t.get("jws"), str):
                add("jwt_token", t["jws"])
        pub = g.get("public") or g.get("private")
        if isinstance(pub, dict):
            add("jwks", b"\x01" + json.dumps({"keys": [pub]}).encode())
if (WYCHEPROOF / "json_web_key_test.json").exists():
    doc = json.loads((WYCHEPROOF / "json_web_key_test.json").read_text())
    for g in doc["testGroups"]:
        for t in g["tests"][:4]:
            for k in ("jwk", "jwks", "public", "private"):
                if isinstance(t.get(k), dict):
                    v = t[k] if "keys" in t[k] else {"keys": [t[k]]}
                    add("jwks", b"\x00" + json.dumps(v).encode())

# rate_limit: operation streams (see the target's header for the encoding).
add("rate_limit", bytes([2, 0, 0, 1, 1, 0, 4, 3, 7]) + bytes([3, 0x13, 0, 0x13, 1, 0, 0xff, 0xff, 3, 0x13, 2, 2, 1, 5]))
add("rate_limit", bytes([0, 0, 3, 7, 2, 1, 11, 11, 9]) + bytes([3] * 20 + [0x13, 5] * 20 + [1, 0x10, 0x27, 3]))

# jwt_request: header count, then (name index, value tag, token index, raw…0xff) per header,
# then the query flag, name index, and the query value the same way (see the target).
names = sorted(tokens)
for i, name in enumerate(names):
    add("jwt_request", bytes([1, 0, 0, i, 0xff, 0]))  # Authorization: Bearer <token>
    add("jwt_request", bytes([0, 1, 1, 4, i]) + b"\xff")  # ?acc%65ss_token=<token>
add("jwt_request", bytes([2, 5, 0, 0, 0xff, 1, 0, 1, 0xff, 0]))  # x_jwt_sub spoof + token
add("jwt_request", bytes([2, 0, 0, 1, 0xff, 3, 0, 2, 0xff, 0]))  # two tokens, two spellings
add("jwt_request", bytes([1, 0, 2, 1]) + b" junk\xff" + bytes([0]))  # Bearer <valid> junk
# A long run's find: `access_token` after a `#` (the fragment is not the query).
add("jwt_request", bytes([0, 1, 0x3B, 0x8C, 0x65, 0x23]) + b";access_token")

if CORPUS.exists():
    shutil.rmtree(CORPUS)
total = 0
for target, items in sorted(seeds.items()):
    d = CORPUS / target
    d.mkdir(parents=True)
    for data in sorted(items):
        (d / hashlib.sha1(data).hexdigest()).write_bytes(data)
        total += len(data)
    print(f"{target}: {len(items)} seeds")
print(f"total {total} bytes")
