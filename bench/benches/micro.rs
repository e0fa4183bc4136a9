//! Per-operation costs of both backends, sealing, HD derivation, libsecp256k1's context
//! re-randomisation, the SDK's check of a signature, what the host's relay spends decoding and
//! re-encoding a `Sign`, and Ed25519 stamps verified alone and in batches.
//!
//! Run: `cargo bench -p bench --bench micro`. Figures and machine in `bench/RESULTS.md`.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use k256::elliptic_curve::sec1::ToSec1Point as _;
use signer_enclave::backend::{Backend, Digest32, K256, Libsecp256k1};
use signer_enclave::hd::{HARDENED, HdPath, HdSeed, XpubVersion};
use signer_enclave::ids::{KeyId, KeyringId};
use signer_enclave::seal::{self, Binding};
use signer_enclave::secret::{KeyringKey, WalletSecret};
use std::hint::black_box;

fn backend<B: Backend>(c: &mut Criterion) {
    let secret = WalletSecret::from_bytes(&[0x42; 32]);
    let key = B::load(&secret).expect("valid scalar qed");
    let public = B::public_key(&key);
    let digest = Digest32([7; 32]);
    let aux = [9u8; 32];
    let ecdsa = B::sign_ecdsa(&key, &digest);
    let schnorr = B::sign_schnorr(&key, &digest.0, &aux).expect("signs qed");
    let mut group = c.benchmark_group(B::NAME);
    group.bench_function("ecdsa_sign_recoverable", |b| {
        b.iter(|| B::sign_ecdsa(black_box(&key), black_box(&digest)))
    });
    group.bench_function("bip340_sign", |b| {
        b.iter(|| B::sign_schnorr(black_box(&key), black_box(&digest.0), &aux))
    });
    group.bench_function("ecdsa_verify", |b| {
        b.iter(|| B::verify_ecdsa_vartime(black_box(&public), &digest, &ecdsa.rs))
    });
    group.bench_function("bip340_verify", |b| {
        b.iter(|| B::verify_schnorr_vartime(&public.xonly(), &digest.0, black_box(&schnorr)))
    });
    group.bench_function("load_key (derive public key)", |b| {
        b.iter(|| B::load(black_box(&secret)))
    });
    group.finish();
}

fn recovery(c: &mut Criterion) {
    let secret = secp256k1::SecretKey::from_secret_bytes([0x42; 32]).expect("valid scalar qed");
    let msg = secp256k1::Message::from_digest([7; 32]);
    let signature = secp256k1::ecdsa::RecoverableSignature::sign_ecdsa_recoverable(msg, &secret);
    c.bench_function("secp256k1/ecdsa_recover", |b| {
        b.iter(|| black_box(&signature).recover_ecdsa(msg))
    });
    // The crate re-randomises its global context after every signing call; this is that cost alone.
    c.bench_function("secp256k1/context_rerandomize", |b| {
        b.iter(|| secp256k1::rerandomize_global_context(black_box(&[5; 32])))
    });
}

/// What a client pays to verify one `Sign` reply: the SDK's ECDSA check (parse, low-S, recovery
/// with libsecp256k1, compare), against the same recovery with `k256` that it made before.
fn sdk_verify(c: &mut Criterion) {
    use k256::ecdsa::{RecoveryId, SigningKey, VerifyingKey};
    use signer_client::pb;
    let signing = SigningKey::from_slice(&[0x42; 32]).expect("valid scalar qed");
    let digest = [7u8; 32];
    let (signature, recovery_id) = signing.sign_prehash_recoverable(&digest);
    let public = signing.verifying_key().as_affine();
    let uncompressed: [u8; 65] = public
        .to_sec1_point(false)
        .as_bytes()
        .try_into()
        .expect("65 bytes qed");
    let info = signer_client::KeyInfo::try_from(pb::KeyInfo {
        key_id: "k-00000000000000000000000000000001".into(),
        keyring_id: "kr-00000000000000000000000000000001".into(),
        public_key_compressed: public.to_sec1_point(true).as_bytes().to_vec(),
        public_key_uncompressed: uncompressed.to_vec(),
        public_key_xonly: uncompressed[1..33].to_vec(),
        ethereum_address: signer_client::verify::ethereum_address(&uncompressed),
        policy_hash: signer_proto::canonical::policy_hash(&[]).to_vec(),
        ..pb::KeyInfo::default()
    })
    .expect("consistent key qed");
    let reply = pb::SignResponse {
        key_id: info.key_id.clone(),
        scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
        signature: signature.to_bytes().to_vec(),
        recovery_id: u32::from(recovery_id.to_byte()),
    };
    c.bench_function("sdk/verify_ecdsa (libsecp256k1 recovery)", |b| {
        b.iter(|| signer_client::verify::verify_ecdsa(&info, black_box(&digest), &reply))
    });
    let id = RecoveryId::from_byte(recovery_id.to_byte()).expect("0..3 qed");
    c.bench_function("sdk/k256 recover_from_prehash (before)", |b| {
        b.iter(|| VerifyingKey::recover_from_prehash(black_box(&digest), &signature, id))
    });
}

/// HD derivation (bip32 over k256): a BIP-84 receiving key from the seed (five steps, three of
/// them hardened; what a sign with a derived key costs without a cache), an account xpub (three
/// hardened steps), and a BIP-39 mnemonic to its seed (PBKDF2, 2048 rounds; once per import).
fn hd(c: &mut Criterion) {
    let seed = HdSeed::from_bytes(&[0x42; 64])
        .and_then(|seed| seed.root())
        .expect("seed qed");
    let receiving = HdPath::from_indices(&[84 | HARDENED, HARDENED, HARDENED, 0, 7]).expect("qed");
    let account = HdPath::from_indices(&[84 | HARDENED, HARDENED, HARDENED]).expect("qed");
    let mnemonic = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
    let mut group = c.benchmark_group("hd");
    group.bench_function("derive m/84'/0'/0'/0/7 from the seed", |b| {
        b.iter(|| seed.derive(black_box(&receiving)))
    });
    group.bench_function("xpub at m/84'/0'/0'", |b| {
        b.iter(|| seed.xpub(black_box(&account), XpubVersion::Zpub))
    });
    group.bench_function("bip39 mnemonic to seed", |b| {
        b.iter(|| HdSeed::from_mnemonic(black_box(mnemonic), "TREZOR"))
    });
    group.finish();
}

fn sealing(c: &mut Criterion) {
    let keyring_key = KeyringKey::from_bytes(&[1; 32]);
    let (key_id, keyring_id) = (
        KeyId::random().expect("rng"),
        KeyringId::random().expect("rng"),
    );
    let public_key = [2u8; 33];
    let policy_hash = seal::policy_hash(b"");
    let binding = Binding {
        key_id: &key_id,
        keyring_id: &keyring_id,
        public_key: &public_key,
        policy_hash: &policy_hash,
    };
    let secret = WalletSecret::from_bytes(&[3; 32]);
    let record = seal::seal(&keyring_key, &binding, &secret).expect("seals qed");
    c.bench_function("seal/seal_record", |b| {
        b.iter(|| seal::seal(&keyring_key, &binding, black_box(&secret)))
    });
    c.bench_function("seal/open_record", |b| {
        b.iter(|| seal::open(&keyring_key, &binding, black_box(&record)))
    });
}

/// What a relay that decodes and re-encodes each message pays per `Sign`: the request (a body
/// with one Ed25519 stamp) and the answer, each decoded and encoded once.
fn relay(c: &mut Criterion) {
    use prost::Message as _;
    use signer_proto::pb;
    let body = pb::RequestBody {
        timestamp_ms: 1_764_000_000_000,
        nonce: vec![7; 16],
        operation: Some(pb::request_body::Operation::Sign(pb::SignBody {
            key_id: format!("k-{}", "ab".repeat(16)),
            scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
            payload: vec![5; 32],
            path: Vec::new(),
        })),
    };
    let request = pb::SignedRequest {
        body: body.encode_to_vec(),
        stamps: vec![pb::Stamp {
            scheme: pb::StampScheme::Ed25519.into(),
            public_key: vec![3; 32],
            signature: vec![4; 64],
        }],
    }
    .encode_to_vec();
    let answer = pb::SignResponse {
        key_id: format!("k-{}", "ab".repeat(16)),
        scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
        signature: vec![6; 64],
        recovery_id: 1,
    }
    .encode_to_vec();
    c.bench_function("relay/decode+encode SignedRequest and SignResponse", |b| {
        b.iter(|| {
            let request = pb::SignedRequest::decode(black_box(request.as_slice()))
                .expect("decodes qed")
                .encode_to_vec();
            let answer = pb::SignResponse::decode(black_box(answer.as_slice()))
                .expect("decodes qed")
                .encode_to_vec();
            (request, answer)
        })
    });
}

/// Ed25519 stamps: one strict verification (what a lone request costs the enclave) against
/// batch verification of 8 and 64 stamps by different keys over different messages (what the
/// enclave's stamp batcher does under load); criterion's throughput is per stamp.
fn stamps(c: &mut Criterion) {
    use ed25519_dalek::Signer as _;
    let stamps: Vec<_> = (0..64u8)
        .map(|i| {
            let key = ed25519_dalek::SigningKey::from_bytes(&[i.wrapping_add(1); 32]);
            // A stamp message's size for a `Sign` body: domain, deployment id, ≈ 130 bytes.
            let message = [b"signer.v1 stamp\0".as_slice(), &[i; 150]].concat();
            let signature = key.sign(&message);
            (key.verifying_key(), message, signature)
        })
        .collect();
    let mut group = c.benchmark_group("stamps");
    group.throughput(criterion::Throughput::Elements(1));
    group.bench_function("ed25519 verify_strict", |b| {
        let (key, message, signature) = &stamps[0];
        b.iter(|| {
            key.verify_strict(black_box(message), signature)
                .expect("verifies qed")
        });
    });
    for n in [8, 64] {
        let keys: Vec<_> = stamps[..n].iter().map(|(key, _, _)| *key).collect();
        let messages: Vec<&[u8]> = stamps[..n].iter().map(|(_, m, _)| m.as_slice()).collect();
        let signatures: Vec<_> = stamps[..n].iter().map(|(_, _, s)| *s).collect();
        group.throughput(criterion::Throughput::Elements(
            u64::try_from(n).expect("small qed"),
        ));
        group.bench_function(format!("ed25519 verify_batch of {n}"), |b| {
            b.iter(|| {
                ed25519_dalek::verify_batch(black_box(&messages), &signatures, &keys)
                    .expect("verifies qed");
            });
        });
    }
    group.finish();
}

fn all(c: &mut Criterion) {
    backend::<K256>(c);
    backend::<Libsecp256k1>(c);
    recovery(c);
    sdk_verify(c);
    sealing(c);
    hd(c);
    relay(c);
    stamps(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
