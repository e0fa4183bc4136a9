//! Stock tools read what the signer writes, and the enclave accepts what they make: API key
//! files from `signer-cli generate-api-key` load in Python's `cryptography`, and a request
//! stamped there — the stamp message built as SPEC.md says, nothing of ours on that side — is
//! authenticated by the enclave and signs.

use signer_client::pb;
use signer_client::pb::request_body::Operation;
use signer_client::stamper::parse_api_key;
use tests::Stack;

/// Loads a PKCS#8 PEM private key with `cryptography` and stamps a message with it: prints the
/// public key (raw Ed25519, or SEC1 compressed P-256) and the signature (r ‖ s for P-256).
const PYTHON_STAMPER: &str = r#"
import sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

with open(sys.argv[1], "rb") as f:
    key = serialization.load_pem_private_key(f.read(), password=None)
message = bytes.fromhex(sys.argv[2])
if isinstance(key, ed25519.Ed25519PrivateKey):
    signature = key.sign(message)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
else:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
print(public.hex(), signature.hex())
"#;

fn python() -> std::path::PathBuf {
    std::env::var_os("SIGNER_TEST_PYTHON").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
        std::path::PathBuf::from,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cryptography_loads_our_key_files_and_the_enclave_accepts_its_stamps() {
    let stack = Stack::start("k256").await;
    let admin = stack.client().await;
    let files = tempfile::tempdir().unwrap();
    for scheme in ["ed25519", "p256"] {
        let path = files.path().join(format!("{scheme}.pem"));
        let path_text = path.display().to_string();
        let generated = tokio::task::block_in_place(|| {
            stack.cli(&["generate-api-key", "--out", &path_text, "--scheme", scheme])
        })
        .unwrap();
        let public = parse_api_key(generated["public_key"].as_str().unwrap()).unwrap();
        // A key whose one approver is that API key.
        let policy = pb::Policy {
            approvers: vec![public.clone()],
            threshold: 1,
            schemes: vec![pb::SignatureScheme::EcdsaSecp256k1.into()],
            admins: vec![stack.admin_key().public()],
            admin_threshold: 1,
            ..Default::default()
        };
        let key = admin
            .create_key_with(&stack.keyring(), "interop", policy)
            .await
            .unwrap();
        let digest = [9u8; 32];
        let body = admin
            .body(Operation::Sign(pb::SignBody {
                key_id: key.key_id.clone(),
                scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
                payload: digest.to_vec(),
                path: Vec::new(),
            }))
            .unwrap();
        let message = signer_proto::canonical::stamp_message(&stack.deployment_id, &body);
        let output = std::process::Command::new(python())
            .arg("-c")
            .arg(PYTHON_STAMPER)
            .arg(&path)
            .arg(hex::encode(&message))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{scheme}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let printed = String::from_utf8(output.stdout).unwrap();
        let (public_hex, signature_hex) = printed.trim().split_once(' ').unwrap();
        assert_eq!(public_hex, hex::encode(&public.public_key), "{scheme}");
        let request = pb::SignedRequest {
            body,
            stamps: vec![pb::Stamp {
                scheme: public.scheme,
                public_key: public.public_key.clone(),
                signature: hex::decode(signature_hex).unwrap(),
            }],
        };
        let reply = admin.raw().sign(request).await.unwrap().into_inner();
        let mut compact = [0u8; 64];
        compact.copy_from_slice(&reply.signature);
        secp256k1::ecdsa::Signature::from_compact(&compact)
            .unwrap()
            .verify(
                secp256k1::Message::from_digest(digest),
                &secp256k1::PublicKey::from_slice(&key.public_key_compressed).unwrap(),
            )
            .unwrap();
    }
}

/// The Python example (`examples/python/sign.py`): stubs generated from the `.proto` files with
/// `grpc_tools.protoc`, stock `grpcio` and `cryptography`, a key file from `signer-cli`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_stamps_and_signs_through_the_stack() {
    let stack = Stack::start("k256").await;
    let admin = stack.client().await;
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = tempfile::tempdir().unwrap();
    let stubs = files.path().join("stubs");
    std::fs::create_dir(&stubs).unwrap();
    let generated = std::process::Command::new(python())
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(workspace.join("proto/proto"))
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg(workspace.join("proto/proto/signer/v1/common.proto"))
        .arg(workspace.join("proto/proto/signer/v1/signer.proto"))
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    for scheme in ["ed25519", "p256"] {
        let path = files.path().join(format!("{scheme}.pem"));
        let path_text = path.display().to_string();
        let generated = tokio::task::block_in_place(|| {
            stack.cli(&["generate-api-key", "--out", &path_text, "--scheme", scheme])
        })
        .unwrap();
        let public = parse_api_key(generated["public_key"].as_str().unwrap()).unwrap();
        let policy = pb::Policy {
            approvers: vec![public],
            threshold: 1,
            schemes: vec![pb::SignatureScheme::EcdsaSecp256k1.into()],
            admins: vec![stack.admin_key().public()],
            admin_threshold: 1,
            ..Default::default()
        };
        let key = admin
            .create_key_with(&stack.keyring(), "python", policy)
            .await
            .unwrap();
        let digest = [0x42u8; 32];
        let endpoint = stack.address.to_string();
        let output = std::process::Command::new(python())
            .arg(workspace.join("examples/python/sign.py"))
            .arg("--endpoint")
            .arg(endpoint.trim_start_matches("tcp://"))
            .args(["--deployment-id", &stack.deployment_id])
            .arg("--api-key")
            .arg(&path)
            .args(["--key-id", &key.key_id, "--digest", &hex::encode(digest)])
            .env("PYTHONPATH", &stubs)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{scheme}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            stack.log()
        );
        let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(printed["key_id"], key.key_id.as_str());
        assert_eq!(printed["request_id"], "python-example");
        assert_eq!(
            printed["public_key"],
            hex::encode(key.public_key_compressed)
        );
        // The signature the example verified, verified again here with libsecp256k1.
        let signature = hex::decode(printed["signature"].as_str().unwrap()).unwrap();
        secp256k1::ecdsa::Signature::from_compact(&signature)
            .unwrap()
            .verify(
                secp256k1::Message::from_digest(digest),
                &secp256k1::PublicKey::from_slice(&key.public_key_compressed).unwrap(),
            )
            .unwrap();
    }
}
