"""A signer client in Python with stock libraries only: grpcio, stubs generated from the
project's .proto files (grpc_tools.protoc), and cryptography for the API key and its stamp.

It reads the key's public key, stamps a Sign request with an API key the key's policy names as
an approver, sends it, and verifies the signature against the public key before printing it.

What it leaves out, and a production client must not: attesting the enclave and checking the
enclave-signed statement that comes with the public key (the Rust SDK does both; the formats are
in signer-enclave/SPEC.md). Without them a hostile host could answer with a key of its own.

Usage (stubs generated into STUBS first, see README.md):
  PYTHONPATH=STUBS python sign.py --endpoint 127.0.0.1:50051 --deployment-id local-dev \
      --api-key api-key.pem --key-id k-... --digest <64 hex digits>
"""

import argparse
import json
import secrets
import time

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

from signer.v1 import common_pb2, signer_pb2, signer_pb2_grpc

# What a stamp signs (signer-enclave/SPEC.md, "Requests"): a domain string, the deployment id's
# length and bytes, then the body exactly as sent.
STAMP_DOMAIN = b"signer.v1 stamp\0"


def stamp_message(deployment_id: str, body: bytes) -> bytes:
    deployment = deployment_id.encode("ascii")
    return STAMP_DOMAIN + bytes([len(deployment)]) + deployment + body


def stamp(key, deployment_id: str, body: bytes) -> common_pb2.Stamp:
    """One API key's stamp: Ed25519, or ECDSA P-256 with SHA-256 written as r || s."""
    message = stamp_message(deployment_id, body)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return common_pb2.Stamp(
            scheme=common_pb2.STAMP_SCHEME_ED25519,
            public_key=public,
            signature=key.sign(message),
        )
    r, s = utils.decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    return common_pb2.Stamp(
        scheme=common_pb2.STAMP_SCHEME_P256_SHA256,
        public_key=public,
        signature=r.to_bytes(32, "big") + s.to_bytes(32, "big"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="host:port of the signer's API")
    parser.add_argument("--deployment-id", required=True)
    parser.add_argument("--api-key", required=True, help="PKCS#8 PEM (signer-cli generate-api-key)")
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--digest", required=True, help="32 bytes, hex")
    args = parser.parse_args()

    with open(args.api_key, "rb") as f:
        api_key = serialization.load_pem_private_key(f.read(), password=None)
    digest = bytes.fromhex(args.digest)
    if len(digest) != 32:
        raise SystemExit("--digest must be 32 bytes")

    with grpc.insecure_channel(args.endpoint) as channel:
        service = signer_pb2_grpc.SignerServiceStub(channel)
        key = service.GetPublicKey(
            signer_pb2.GetPublicKeyRequest(key_id=args.key_id, challenge=secrets.token_bytes(32)),
            timeout=10,
        ).key

        body = common_pb2.RequestBody(
            timestamp_ms=int(time.time() * 1000),
            nonce=secrets.token_bytes(16),
            sign=common_pb2.SignBody(
                key_id=args.key_id,
                scheme=common_pb2.SIGNATURE_SCHEME_ECDSA_SECP256K1,
                payload=digest,
            ),
        ).SerializeToString(deterministic=True)
        request = common_pb2.SignedRequest(
            body=body, stamps=[stamp(api_key, args.deployment_id, body)]
        )
        response, call = service.Sign.with_call(
            request, timeout=10, metadata=[("x-request-id", "python-example")]
        )

    # Verify before trusting: the signature is over the digest, by the key read above.
    r = int.from_bytes(response.signature[:32], "big")
    s = int.from_bytes(response.signature[32:], "big")
    ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256K1(), key.public_key_compressed
    ).verify(
        utils.encode_dss_signature(r, s), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    )
    request_id = dict(call.initial_metadata()).get("x-request-id")
    print(
        json.dumps(
            {
                "key_id": response.key_id,
                "signature": response.signature.hex(),
                "recovery_id": response.recovery_id,
                "public_key": key.public_key_compressed.hex(),
                "request_id": request_id,
            }
        )
    )


if __name__ == "__main__":
    main()
