"""A KMS-API server on loopback for tests and the local stack: moto's KMS, extended.

moto ignores `Recipient` and returns `Plaintext`, so an enclave that did not fail closed would
pass against it. This server makes `Decrypt` and `GenerateDataKey` behave like AWS KMS when a
`Recipient` is present:

* the attestation document is verified (COSE_Sign1 ES384, chain from the configured root,
  validity now), and its RSA public key becomes the recipient;
* the key policy is enforced for `Decrypt`, `GenerateDataKey` and `Encrypt` (set it with
  `PutKeyPolicy`): `Effect`, `Action` with `*` wildcards, and `StringEquals`,
  `StringEqualsIgnoreCase` and `Null` conditions on `kms:RecipientAttestation:PCR<n>` /
  `ImageSha384`; an explicit Deny wins. Principals are not modelled: every statement applies to
  every caller;
* the response carries `CiphertextForRecipient` in AWS's format (CMS EnvelopedData, BER with
  indefinite lengths, version 2, subjectKeyIdentifier = SHA-256 of the recipient's
  SubjectPublicKeyInfo, RSAES-OAEP-SHA256 key transport, AES-256-CBC content in OCTET STRING
  chunks of at most 1000 bytes) and **no** `Plaintext`.

It is a test stand-in for AWS KMS, not a KMS: keys live in this process's memory.

Usage: kms_test_server.py --attestation-root PATH [--port 0]
Prints `listening tcp://127.0.0.1:PORT` on stdout once it accepts connections.
"""

import argparse
import base64
import datetime
import fnmatch
import hashlib
import json
import os
import sys

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding as sym_padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from moto.core.exceptions import JsonRESTError
from moto.kms.responses import KmsResponse

ROOT_PATH = None


class AccessDenied(JsonRESTError):
    def __init__(self, message):
        super().__init__("AccessDeniedException", message)


class Validation(JsonRESTError):
    def __init__(self, message):
        super().__init__("ValidationException", message)


# ---- attestation ---------------------------------------------------------------------------

def verify_attestation(document):
    """Returns (pcrs, public_key_der) of a valid document, or raises Validation."""
    if ROOT_PATH is None or not os.path.exists(ROOT_PATH):
        raise Validation("no attestation root configured on this test server")
    root_der = open(ROOT_PATH, "rb").read()
    try:
        value = cbor2.loads(document)
        if isinstance(value, cbor2.CBORTag) and value.tag == 18:
            value = value.value
        protected, _unprotected, payload_bytes, signature = value
        if cbor2.loads(protected) != {1: -35} or len(signature) != 96:
            raise ValueError("not ES384")
        payload = cbor2.loads(payload_bytes)
        chain = list(payload["cabundle"]) + [payload["certificate"]]
    except Exception as error:  # noqa: BLE001 - any parse failure is a malformed document
        raise Validation(f"malformed attestation document: {error}") from None
    if chain[0] != root_der:
        raise Validation("attestation document does not chain to the configured root")
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer = None
    for der in chain:
        cert = x509.load_der_x509_certificate(der)
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            raise Validation("attestation certificate outside its validity")
        key = issuer or cert.public_key()
        try:
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA384()))
        except Exception:  # noqa: BLE001
            raise Validation("attestation certificate signature invalid") from None
        issuer = cert.public_key()
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload_bytes])
    r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    try:
        issuer.verify(utils.encode_dss_signature(r, s), sig_structure, ec.ECDSA(hashes.SHA384()))
    except Exception:  # noqa: BLE001
        raise Validation("attestation document signature invalid") from None
    public_key = payload.get("public_key")
    if not public_key:
        raise Validation("attestation document carries no public key")
    return {int(k): bytes(v) for k, v in payload["pcrs"].items()}, bytes(public_key)


# ---- key policy -----------------------------------------------------------------------------

def condition_holds(operator, key, expected, pcrs):
    """One condition entry. Only RecipientAttestation keys are understood; anything else fails."""
    name = key.lower()
    if name == "kms:recipientattestation:imagesha384":
        actual = pcrs.get(0) if pcrs else None
    elif name.startswith("kms:recipientattestation:pcr"):
        actual = pcrs.get(int(name[len("kms:recipientattestation:pcr"):])) if pcrs else None
    else:
        return False
    if operator == "Null":
        wanted_absent = str(expected).lower() == "true"
        return (actual is None) == wanted_absent
    if actual is None:
        return False
    expected = expected if isinstance(expected, list) else [expected]
    if operator == "StringEqualsIgnoreCase":
        return actual.hex() in [e.lower() for e in expected]
    if operator == "StringEquals":
        return actual.hex() in expected
    return False


def statement_applies(statement, action, pcrs):
    actions = statement.get("Action", [])
    actions = actions if isinstance(actions, list) else [actions]
    if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions):
        return False
    for operator, conditions in statement.get("Condition", {}).items():
        for key, expected in conditions.items():
            if not condition_holds(operator, key, expected, pcrs):
                return False
    return True


def enforce_policy(policy_json, action, pcrs):
    policy = json.loads(policy_json)
    statements = policy.get("Statement", [])
    statements = statements if isinstance(statements, list) else [statements]
    if any(s.get("Effect") == "Deny" and statement_applies(s, action, pcrs) for s in statements):
        raise AccessDenied(f"{action} denied by an explicit Deny in the key policy")
    if not any(s.get("Effect") == "Allow" and statement_applies(s, action, pcrs) for s in statements):
        raise AccessDenied(f"{action} is not allowed by the key policy for this request's attestation")


# ---- CMS EnvelopedData, BER as AWS emits it -------------------------------------------------

def der_length(n):
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag, content):
    return bytes([tag]) + der_length(len(content)) + content


def indefinite(tag, *parts):
    return bytes([tag, 0x80]) + b"".join(parts) + b"\x00\x00"


OID_ENVELOPED_DATA = bytes.fromhex("06092a864886f70d010703")
OID_DATA = bytes.fromhex("06092a864886f70d010701")
OID_RSAES_OAEP = bytes.fromhex("06092a864886f70d010107")
OAEP_SHA256_PARAMS = bytes.fromhex(
    "302fa00f300d06096086480165030402010500a11c301a06092a864886f70d010108300d06096086480165030402010500"
)
OID_AES256_CBC = bytes.fromhex("060960864801650304012a")


def envelope(plaintext, recipient_spki_der):
    recipient = serialization.load_der_public_key(recipient_spki_der)
    if not isinstance(recipient, rsa.RSAPublicKey):
        raise Validation("the attested public key is not an RSA key")
    content_key, iv = os.urandom(32), os.urandom(16)
    padder = sym_padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(content_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    wrapped = recipient.encrypt(
        content_key,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    ski = hashlib.sha256(recipient_spki_der).digest()
    ktri = tlv(
        0x30,
        tlv(0x02, b"\x02") + tlv(0x80, ski) + tlv(0x30, OID_RSAES_OAEP + OAEP_SHA256_PARAMS) + tlv(0x04, wrapped),
    )
    chunks = b"".join(tlv(0x04, ciphertext[i : i + 1000]) for i in range(0, len(ciphertext), 1000))
    encrypted_content_info = indefinite(
        0x30, OID_DATA, tlv(0x30, OID_AES256_CBC + tlv(0x04, iv)), indefinite(0xA0, chunks)
    )
    enveloped = indefinite(0x30, tlv(0x02, b"\x02"), tlv(0x31, ktri), encrypted_content_info)
    return indefinite(0x30, OID_ENVELOPED_DATA, indefinite(0xA0, enveloped))


# ---- the KMS calls --------------------------------------------------------------------------

def recipient_of(response):
    recipient = response._get_param("Recipient")
    if recipient is None:
        return None
    if recipient.get("KeyEncryptionAlgorithm") != "RSAES_OAEP_SHA_256":
        raise Validation("Recipient.KeyEncryptionAlgorithm must be RSAES_OAEP_SHA_256")
    return verify_attestation(base64.b64decode(recipient.get("AttestationDocument", "")))


def with_recipient(original, action):
    def handler(self):
        recipient = recipient_of(self)
        # Decrypt may omit KeyId (KMS reads it from the blob): decide on the key that answered.
        result = json.loads(original(self))
        key = self.kms_backend.describe_key(result["KeyId"])
        enforce_policy(key.policy, action, recipient[0] if recipient else None)
        if recipient is not None:
            plaintext = base64.b64decode(result.pop("Plaintext"))
            result["CiphertextForRecipient"] = base64.b64encode(envelope(plaintext, recipient[1])).decode()
        return json.dumps(result)

    return handler


def with_policy(original, action):
    def handler(self):
        answer = original(self)
        key = self.kms_backend.describe_key(json.loads(answer)["KeyId"])
        enforce_policy(key.policy, action, None)
        return answer

    return handler


KmsResponse.decrypt = with_recipient(KmsResponse.decrypt, "kms:Decrypt")
KmsResponse.generate_data_key = with_recipient(KmsResponse.generate_data_key, "kms:GenerateDataKey")
KmsResponse.encrypt = with_policy(KmsResponse.encrypt, "kms:Encrypt")


def main():
    global ROOT_PATH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attestation-root", required=True, help="DER certificate attestation chains must start at (read per request)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    ROOT_PATH = args.attestation_root

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    port = server._server.server_port  # noqa: SLF001 - the bound port when 0 was asked for
    print(f"listening tcp://127.0.0.1:{port}", flush=True)
    # Exit when the parent closes our stdin (tests hold a pipe), or on a signal.
    try:
        while sys.stdin.read(1):
            pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
