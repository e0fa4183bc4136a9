"""Generate known-answer vectors for request "stamps" with an independent implementation.

A stamp is a client signature over the exact bytes of a `SignedRequest.body`
(see proto/proto/signer/v1/common.proto). This script signs a few fixed bodies
with Python's `cryptography` package (OpenSSL underneath), not with this
project's Rust code, so the enclave's stamp verifier can be checked against it.
Schemes:

* P256_SHA256: ECDSA over NIST P-256 with SHA-256 of the body. Signature is a
  fixed 64-byte big-endian r || s. Public key is SEC1, uncompressed (65 bytes,
  0x04 || x || y) or compressed (33 bytes, 0x02/0x03 || x); both forms appear.
* ED25519: pure Ed25519 (RFC 8032) over the body. 32-byte public key, 64-byte
  signature R || S.

Valid vectors are asserted to verify with `cryptography`; invalid ones are
asserted to be rejected wherever `cryptography` can express the check.

The committed fixture testdata/vectors/stamps_python_cryptography.json was
produced by Python 3.11.7 with cryptography 50.0.2 (OpenSSL 4.0.3). Keys are
fresh and random on every run, so a rerun gives different keys and signatures
(the bodies are fixed); the committed JSON is the fixture. From the repository
root, rerun with:

    .venv/bin/python tests/stamp-vectors/make_stamp_vectors.py > testdata/vectors/stamps_python_cryptography.json

The JSON goes to stdout.
"""

import hashlib
import json
import platform
import struct

import cryptography
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.backends.openssl.backend import backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ED25519_L = 2**252 + 27742317777372353535851937790883648493
ECDSA = ec.ECDSA(hashes.SHA256())


# ---- fixed bodies (1..2000 bytes) -------------------------------------------

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num, wire, value):
    key = _varint(num << 3 | wire)
    if wire == 0:
        return key + _varint(value)
    return key + _varint(len(value)) + value


# signer.v1.SignBody, protobuf-encoded by hand (fields 1..5).
SIGN_BODY = b"".join([
    _field(1, 2, b"k-" + hashlib.sha256(b"key").hexdigest()[:32].encode()),
    _field(2, 0, 1),  # SIGNATURE_SCHEME_ECDSA_SECP256K1
    _field(3, 2, hashlib.sha256(b"payload").digest()),
    _field(4, 0, 1767225600123),  # timestamp_ms
    _field(5, 2, hashlib.sha256(b"nonce").digest()[:16]),
])
# signer.v1.CreateKeyBody, protobuf-encoded by hand (fields 1..4).
CREATE_KEY_BODY = b"".join([
    _field(1, 2, b"kr-default"),
    _field(2, 2, "treasury hot wallet \u2713".encode()),
    _field(3, 0, 1767225600456),
    _field(4, 2, hashlib.sha256(b"nonce2").digest()),
])
LONG_BODY = b"".join(
    hashlib.sha256(b"stamp-vectors long body" + struct.pack(">I", i)).digest()
    for i in range(63)
)[:2000]
JSON_BODY = b'{"key_id":"k-00112233445566778899aabbccddeeff","payload":"aGVsbG8gd29ybGQ="}'
ONE_BYTE_BODY = b"\x2a"

BODIES = [
    (ONE_BYTE_BODY, "1-byte body"),
    (JSON_BODY, "ASCII JSON body"),
    (SIGN_BODY, "protobuf SignBody"),
    (LONG_BODY, "2000-byte pseudo-random body"),
]
for b, _ in BODIES + [(CREATE_KEY_BODY, "")]:
    assert 1 <= len(b) <= 2000
assert len(LONG_BODY) == 2000


# ---- helpers -----------------------------------------------------------------

def flip(data, index, mask=0x01):
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


def rejects(verify, *args):
    try:
        verify(*args)
    except InvalidSignature:
        return True
    return False


vectors = []


def add(scheme, public_key, body, signature, valid, comment):
    vectors.append({
        "id": len(vectors) + 1,
        "scheme": scheme,
        "public_key": public_key.hex(),
        "body": body.hex(),
        "signature": signature.hex(),
        "valid": valid,
        "comment": comment,
    })


# ---- P-256 -------------------------------------------------------------------

def p256_points(key):
    pub = key.public_key()
    return (pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint),
            pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint))


def p256_sign(key, body):
    """Sign; return (r||s with low S, note, r, s). cryptography's own output is DER."""
    r, s = decode_dss_signature(key.sign(body, ECDSA))
    note = "low-S as produced"
    if s > P256_N // 2:
        s, note = P256_N - s, "s normalised to low-S (cryptography produced high-S)"
    return r.to_bytes(32, "big") + s.to_bytes(32, "big"), note, r, s


def p256_verify(public_key, body, rs):
    """cryptography's verdict for a 64-byte r||s and a SEC1 key (either form)."""
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    der = encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))
    pub.verify(der, body, ECDSA)


# One key with an even y (prefix 02) and one with an odd y (prefix 03).
p_keys = {}
while len(p_keys) < 2:
    k = ec.generate_private_key(ec.SECP256R1())
    p_keys.setdefault(p256_points(k)[1][0], k)
pk_a, pk_b = p_keys[0x02], p_keys[0x03]
a_unc, a_cmp = p256_points(pk_a)
b_unc, b_cmp = p256_points(pk_b)

S = "P256_SHA256"
sigs = {}
for body, what in BODIES:
    sig, note, _, _ = p256_sign(pk_a, body)
    sigs[body] = sig
    p256_verify(a_unc, body, sig)
    add(S, a_unc, body, sig, True, f"{what}, uncompressed key; {note}")
for body, what in BODIES:
    p256_verify(a_cmp, body, sigs[body])
    add(S, a_cmp, body, sigs[body], True, f"{what}, compressed key (02), same signature as the uncompressed vector")
sig, note, _, _ = p256_sign(pk_b, CREATE_KEY_BODY)
for key, form in ((b_cmp, "compressed key (03)"), (b_unc, "uncompressed key")):
    p256_verify(key, CREATE_KEY_BODY, sig)
    add(S, key, CREATE_KEY_BODY, sig, True, f"protobuf CreateKeyBody, {form}; {note}")

# High-S: same r, s' = n - s (s' > n/2). Standard ECDSA accepts it.
r_bytes, s_low = sigs[SIGN_BODY][:32], int.from_bytes(sigs[SIGN_BODY][32:], "big")
high = r_bytes + (P256_N - s_low).to_bytes(32, "big")
assert P256_N - s_low > P256_N // 2
p256_verify(a_unc, SIGN_BODY, high)
add(S, a_unc, SIGN_BODY, high, True, "high-S, accepted: P-256 ECDSA is not normalised (s replaced by n - s)")

# Negatives.
body, sig = JSON_BODY, sigs[JSON_BODY]
bad_body = flip(body, len(body) // 2)
assert rejects(p256_verify, a_unc, bad_body, sig)
add(S, a_unc, bad_body, sig, False, f"body bit flipped (byte {len(body) // 2}, bit 0)")

bad_sig = flip(sig, 10)
assert rejects(p256_verify, a_unc, body, bad_sig)
add(S, a_unc, body, bad_sig, False, "signature bit flipped (byte 10, bit 0, inside r)")

assert rejects(p256_verify, b_unc, body, sig)
add(S, b_unc, body, sig, False, "valid signature by another key, checked against a different valid public key")

add(S, a_unc, body, sig[:63], False, "truncated signature (63 bytes: last byte of s dropped)")

der = pk_a.sign(body, ECDSA)
pk_a.public_key().verify(der, body, ECDSA)  # a correct DER signature...
assert len(der) != 64
add(S, a_unc, body, der, False, f"DER-encoded signature ({len(der)} bytes) instead of 64-byte r||s: wrong encoding")

r0 = bytes(32) + sig[32:]
assert rejects(p256_verify, a_unc, body, r0)
add(S, a_unc, body, r0, False, "r = 0 (s from a valid signature)")
s0 = sig[:32] + bytes(32)
assert rejects(p256_verify, a_unc, body, s0)
add(S, a_unc, body, s0, False, "s = 0 (r from a valid signature)")

for mask in range(1, 256):
    off = flip(a_unc, 64, mask)
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), off)
    except ValueError:
        break
else:
    raise AssertionError("no off-curve variant found")
add(S, off, body, sig, False,
    f"public key not on the curve (last byte of y XOR 0x{mask:02x}; cryptography refuses to load it); signature is valid for the original key")


# ---- Ed25519 -----------------------------------------------------------------

def ed_pub(key):
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed_verify(public_key, body, sig):
    ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(sig, body)


ek_a, ek_b = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
ea, eb = ed_pub(ek_a), ed_pub(ek_b)

S = "ED25519"
esigs = {}
for body, what in BODIES:
    esigs[body] = ek_a.sign(body)
    ed_verify(ea, body, esigs[body])
    add(S, ea, body, esigs[body], True, what)
sig = ek_b.sign(CREATE_KEY_BODY)
ed_verify(eb, CREATE_KEY_BODY, sig)
add(S, eb, CREATE_KEY_BODY, sig, True, "protobuf CreateKeyBody, second key")

body, sig = JSON_BODY, esigs[JSON_BODY]
bad_body = flip(body, len(body) // 2)
assert rejects(ed_verify, ea, bad_body, sig)
add(S, ea, bad_body, sig, False, f"body bit flipped (byte {len(body) // 2}, bit 0)")

bad_sig = flip(sig, 40)
assert int.from_bytes(bad_sig[32:], "little") < ED25519_L  # still canonical: a plain wrong signature
assert rejects(ed_verify, ea, body, bad_sig)
add(S, ea, body, bad_sig, False, "signature bit flipped (byte 40, bit 0, inside S; S stays < L)")

assert rejects(ed_verify, eb, body, sig)
add(S, eb, body, sig, False, "valid signature by another key, checked against a different valid public key")

add(S, ea, body, sig[:63], False, "truncated signature (63 bytes: last byte of S dropped)")

s_val = int.from_bytes(sig[32:], "little")
big_s = sig[:32] + (s_val + ED25519_L).to_bytes(32, "little")
assert rejects(ed_verify, ea, body, big_s)
add(S, ea, body, big_s, False, "non-canonical S: S + L (little-endian) from a valid signature; S >= L must be rejected")

identity = b"\x01" + bytes(31)
forged = identity + bytes(32)  # R = identity, S = 0: satisfies [S]B = R + [k]A when A is the identity
lax = "accepts" if not rejects(ed_verify, identity, body, forged) else "rejects"
add(S, identity, body, forged, False,
    "small-order public key (identity point, 01 00..00) with R = identity, S = 0; passes the bare "
    f"verification equation (OpenSSL via cryptography {cryptography.__version__} {lax} it) but a strict verifier must reject")
assert rejects(ed_verify, identity, body, sig)
add(S, identity, body, sig, False, "small-order public key (identity point, 01 00..00) with an unrelated valid signature")


# ---- output ------------------------------------------------------------------

print(json.dumps({
    "generator": (f"tests/stamp-vectors/make_stamp_vectors.py: Python {platform.python_version()}, "
                  f"cryptography {cryptography.__version__}, {backend.openssl_version_text()}"),
    "description": (
        "Stamp known-answer vectors (signatures over the exact request-body bytes) made by an "
        "independent implementation. All byte fields are lowercase hex. P256_SHA256: ECDSA P-256 "
        "with SHA-256 of body, signature 64-byte big-endian r||s, public_key SEC1 uncompressed (65 "
        "bytes) or compressed (33 bytes); valid signatures are low-S except the one marked high-S. "
        "ED25519: RFC 8032 pure Ed25519 over body, 32-byte public_key, 64-byte signature. valid is "
        "the verdict a strict verifier must give (non-canonical S and small-order keys rejected; "
        "high-S P-256 accepted)."),
    "vectors": vectors,
}, indent=2))
