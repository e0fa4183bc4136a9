//! HD roots over real processes: a root created in the enclave exports a verified account xpub
//! whose locally derived keys are exactly the keys the enclave signs with; paths outside the
//! root's subtrees are refused for signing and for export; Ethereum rules and their daily total
//! span every key under a root; a hostile host can neither move a signature to another path nor
//! pass off one path's key as another's.

use alloy_consensus::transaction::SignerRecoverable as _;
use alloy_consensus::{SignableTransaction as _, TxEip1559, TxEnvelope};
use alloy_eips::Decodable2718 as _;
use alloy_primitives::{Address, TxKind, U256};
use prost::Message as _;
use signer_client::hd::{HARDENED, parse_path};
use signer_client::pb::request_body::Operation;
use signer_client::{Client, Error, pb, policy};
use std::sync::Arc;

use tests::relay::Method;
use tests::{HostileRelay, Stack};
use tonic::Code;

const H: u32 = HARDENED;
const ETHER: u64 = 1_000_000_000_000_000_000;

fn status_of<T: std::fmt::Debug>(result: Result<T, Error>) -> Code {
    match result {
        Err(Error::Status(status)) => status.code(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn join(prefix: &[u32], rest: &[u32]) -> Vec<u32> {
    prefix.iter().chain(rest).copied().collect()
}

async fn root(stack: &Stack, client: &Client, subtrees: &[Vec<u32>]) -> String {
    let policy = policy::hd_root_for(&stack.admin_stamper(), subtrees).unwrap();
    let root = client
        .create_hd_root(&stack.keyring(), "deposits", policy)
        .await
        .unwrap();
    let hd = root.hd.as_ref().unwrap();
    assert!(hd.path.is_empty() && hd.xpub.is_none(), "{hd:?}");
    root.key_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_xpub_derives_the_keys_the_enclave_signs_with() {
    let stack = Stack::start("secp256k1").await;
    let client = stack.client().await;
    let account = parse_path("m/84'/0'/0'").unwrap();
    assert_eq!(account, [84 | H, H, H]);
    let id = root(&stack, &client, std::slice::from_ref(&account)).await;
    let root_info = client.public_key(&id).await.unwrap();

    let exported = client.derived_key(&id, &account).await.unwrap();
    let hd = exported.hd.clone().unwrap();
    let xpub = hd.xpub.unwrap();
    assert_eq!(xpub.depth(), 3);
    assert!(xpub.to_string().starts_with("xpub"), "{xpub}");
    assert_eq!(hd.root_fingerprint, root_info.hd.unwrap().root_fingerprint);

    for (chain, index) in [(0, 0), (0, 7), (1, 3)] {
        let path = join(&account, &[chain, index]);
        let local = xpub.derive(&[chain, index]).unwrap();
        let derived = client.derived_key(&id, &path).await.unwrap();
        assert_eq!(derived.public_key_compressed, local.to_bytes());
        assert_eq!(derived.key_id, id);
        let address = xpub.p2wpkh_address(chain, index, None).unwrap();
        assert_eq!(
            address,
            bitcoin::Address::p2wpkh(&local, bitcoin::KnownHrp::Mainnet)
        );

        // Signed by that key, verified here with libsecp256k1 against the locally derived key.
        let digest = [u8::try_from(index).unwrap() + 1; 32];
        let sig = client.sign_digest_at(&id, &path, digest).await.unwrap();
        let mut compact = [0; 64];
        compact[..32].copy_from_slice(&sig.r);
        compact[32..].copy_from_slice(&sig.s);
        secp256k1::ecdsa::Signature::from_compact(&compact)
            .unwrap()
            .verify(
                secp256k1::Message::from_digest(digest),
                &secp256k1::PublicKey::from_slice(&local.to_bytes()).unwrap(),
            )
            .unwrap();
        let schnorr = client.sign_schnorr_at(&id, &path, b"hd").await.unwrap();
        secp256k1::schnorr::Signature::from_byte_array(schnorr.0)
            .verify(
                b"hd",
                &secp256k1::XOnlyPublicKey::from_byte_array(derived.public_key_xonly).unwrap(),
            )
            .unwrap();
    }

    // A batch at a derived path: each signature is the one a single signature there gives
    // (RFC 6979), and a path outside the subtree is refused for the batch as for one.
    let path = join(&account, &[0, 9]);
    let digests = [[1u8; 32], [2; 32], [3; 32]];
    let batch = client.sign_digests_at(&id, &path, &digests).await.unwrap();
    for (digest, signature) in digests.iter().zip(&batch) {
        assert_eq!(
            &client.sign_digest_at(&id, &path, *digest).await.unwrap(),
            signature
        );
    }
    let sibling = parse_path("m/84'/0'/1'/0/0").unwrap();
    assert_eq!(
        status_of(client.sign_digests_at(&id, &sibling, &digests).await),
        Code::PermissionDenied
    );

    // Outside the subtree (a sibling account, the subtree's parent, another purpose): no
    // signature and no public key. The root itself does not sign.
    for outside in ["m/84'/0'/1'/0/0", "m/84'/0'", "m/44'/0'/0'/0/0"] {
        let path = parse_path(outside).unwrap();
        assert_eq!(
            status_of(client.sign_digest_at(&id, &path, [1; 32]).await),
            Code::PermissionDenied,
            "{outside}"
        );
        assert_eq!(
            status_of(client.derived_key(&id, &path).await),
            Code::PermissionDenied,
            "{outside}"
        );
    }
    assert_eq!(
        status_of(client.sign_digest(&id, [1; 32]).await),
        Code::InvalidArgument
    );
    // A single key has no path.
    let single = client.create_key(&stack.keyring(), "single").await.unwrap();
    assert_eq!(
        status_of(
            client
                .sign_digest_at(&single.key_id, &join(&account, &[0, 0]), [1; 32])
                .await
        ),
        Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethereum_rules_and_their_daily_total_span_every_key_under_a_root() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let bob = Address::repeat_byte(0xb0);
    let account = parse_path("m/44'/60'/0'").unwrap();
    let policy = pb::Policy {
        schemes: vec![pb::SignatureScheme::EcdsaSecp256k1.into()],
        ethereum: Some(pb::EthereumRules {
            chain_ids: vec![1],
            destinations: vec![bob.to_vec()],
            max_value_wei: U256::from(10 * ETHER).to_be_bytes_trimmed_vec(),
            max_value_per_day_wei: U256::from(12 * ETHER).to_be_bytes_trimmed_vec(),
            ..Default::default()
        }),
        ..policy::hd_root_for(&stack.admin_stamper(), std::slice::from_ref(&account)).unwrap()
    };
    let id = client
        .create_hd_root(&stack.keyring(), "eth", policy)
        .await
        .unwrap()
        .key_id;
    let send = |nonce: u64, value: u64| {
        let tx = TxEip1559 {
            chain_id: 1,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: 30_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to: TxKind::Call(bob),
            value: U256::from(value) * U256::from(ETHER),
            access_list: Default::default(),
            input: Default::default(),
        };
        let mut out = Vec::new();
        tx.encode_for_signing(&mut out);
        out
    };
    let first = join(&account, &[0, 0]);
    let second = join(&account, &[0, 1]);
    let signed = client
        .sign_transaction_at(&id, &first, &send(0, 8))
        .await
        .unwrap();
    // The broadcast form recovers to the derived key's address, not the root's.
    let sender = TxEnvelope::decode_2718(&mut signed.encoded.as_slice())
        .unwrap()
        .recover_signer()
        .unwrap();
    let derived = client.derived_key(&id, &first).await.unwrap();
    assert_eq!(sender, derived.ethereum_address.parse::<Address>().unwrap());
    let root_address: Address = client
        .public_key(&id)
        .await
        .unwrap()
        .ethereum_address
        .parse()
        .unwrap();
    assert_ne!(sender, root_address);

    // Splitting across addresses does not escape the root's daily total: 8 + 5 > 12.
    assert_eq!(
        status_of(client.sign_transaction_at(&id, &second, &send(0, 5)).await),
        Code::PermissionDenied
    );
    client
        .sign_transaction_at(&id, &second, &send(0, 4))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_host_cannot_move_a_signature_or_a_key_to_another_path() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let account = parse_path("m/86'/0'/0'").unwrap();
    let id = root(&stack, &client, std::slice::from_ref(&account)).await;
    let mine = join(&account, &[0, 1]);
    let other = join(&account, &[0, 2]);

    // The path is inside the stamped body: editing it breaks the stamps.
    let body = client
        .body(Operation::Sign(pb::SignBody {
            key_id: id.clone(),
            scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
            payload: vec![4; 32],
            path: mine.clone(),
        }))
        .unwrap();
    let mut decoded = pb::RequestBody::decode(body.as_slice()).unwrap();
    if let Some(Operation::Sign(sign)) = decoded.operation.as_mut() {
        sign.path.clone_from(&other);
    }
    let edited = stack.stamped(decoded.encode_to_vec(), &[]);
    let mut stamped = stack.stamped(body, &[&stack.admin_key()]);
    stamped.body = edited.body;
    let status = client.raw().sign(stamped).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // A statement for one path does not pass for another: the host answers the SDK's
    // question about `mine` with the enclave's genuine, fresh statement about `other`.
    let relay = HostileRelay::start(&stack.address).await;
    let through_relay = stack
        .client_at(relay.address.clone(), Some(stack.admin_stamper()))
        .await;
    let swapped = other.clone();
    relay.tamper_lookup(Some(Arc::new(
        move |request: &mut pb::GetPublicKeyRequest| {
            request.path.clone_from(&swapped);
        },
    )));
    match through_relay.derived_key(&id, &mine).await {
        Err(Error::Verification(why)) => assert!(why.contains("another derivation path"), "{why}"),
        other => panic!("a swapped path passed: {other:?}"),
    }
    match through_relay.sign_digest_at(&id, &mine, [6; 32]).await {
        Err(Error::Verification(_)) => {}
        other => panic!("signed against a swapped key: {other:?}"),
    }
    relay.tamper_lookup(None);
    let honest = through_relay.derived_key(&id, &mine).await.unwrap();
    assert_eq!(honest.hd.unwrap().path, mine);

    // Depth beyond BIP-32's 255 is refused before any derivation.
    let deep = vec![0; 256];
    let status = client
        .raw()
        .get_public_key(pb::GetPublicKeyRequest {
            key_id: id.clone(),
            challenge: vec![1; 32],
            path: deep,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

fn vectors(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/vectors")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_seeds_and_mnemonics_make_the_roots_the_bips_give() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let admin = stack.admin_stamper();

    // BIP-32 test vector 1, imported as a seed: the enclave's xpubs are the vector's.
    let bip32 = vectors("bip32_vectors.json");
    let vector = &bip32["vectors"][0];
    let seed = hex::decode(vector["seed_hex"].as_str().unwrap()).unwrap();
    let chains = vector["chains"].as_array().unwrap();
    let first = &chains[1];
    let account: Vec<u32> = serde_json::from_value(first["indices"].clone()).unwrap();
    let policy = policy::hd_root_for(&admin, std::slice::from_ref(&account)).unwrap();
    let root = client
        .import_hd_seed(&stack.keyring(), "vector 1", policy, &seed)
        .await
        .unwrap();
    for chain in &chains[1..3] {
        let path: Vec<u32> = serde_json::from_value(chain["indices"].clone()).unwrap();
        let derived = client.derived_key(&root.key_id, &path).await.unwrap();
        assert_eq!(
            derived.hd.unwrap().xpub.unwrap().to_string(),
            chain["xpub"].as_str().unwrap(),
            "{}",
            chain["path"]
        );
    }

    // BIP-84's mnemonic: the account key is the vector's (which BIP-84 writes as a zpub), and
    // its addresses, derived here from the exported xpub, are the vector's.
    let bip84 = vectors("bip84_bip86_vectors.json")["bip84"].clone();
    let account = parse_path("m/84'/0'/0'").unwrap();
    let policy = policy::hd_root_for(&admin, std::slice::from_ref(&account)).unwrap();
    let root = client
        .import_mnemonic(
            &stack.keyring(),
            "bip84",
            policy,
            bip84[0]["mnemonic"].as_str().unwrap(),
            "",
        )
        .await
        .unwrap();
    let exported = client.derived_key(&root.key_id, &account).await.unwrap();
    let xpub = exported.hd.unwrap().xpub.unwrap();
    let zpub: signer_client::hd::AccountXpub = bip84[1]["xpub"].as_str().unwrap().parse().unwrap();
    assert_eq!(xpub.public_key(), zpub.public_key());
    for (entry, (chain, index)) in
        bip84.as_array().unwrap()[2..]
            .iter()
            .zip([(0, 0), (0, 1), (1, 0)])
    {
        assert_eq!(
            xpub.p2wpkh_address(chain, index, None).unwrap().to_string(),
            entry["address"].as_str().unwrap()
        );
    }

    // Malformed material is refused in the SDK before anything is sent.
    let policy = policy::hd_root_for(&admin, std::slice::from_ref(&account)).unwrap();
    assert!(matches!(
        client
            .import_mnemonic(&stack.keyring(), "x", policy.clone(), "abandon about", "")
            .await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        client
            .import_hd_seed(&stack.keyring(), "x", policy, &[1; 20])
            .await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_seed_cannot_be_read_as_another_material() {
    let stack = Stack::start("k256").await;
    stack.client().await; // creates the keyring
    let relay = HostileRelay::start(&stack.address).await;
    // The relay keeps the import to itself: what reaches the host is garbage.
    relay.tamper(Some(Arc::new(|method, request| {
        if method == Method::ImportKey {
            request.body = vec![0xff; 8];
        }
    })));
    let client = stack
        .client_at(relay.address.clone(), Some(stack.admin_stamper()))
        .await;
    let account = parse_path("m/84'/0'/0'").unwrap();
    let policy = policy::hd_root_for(&stack.admin_stamper(), &[account]).unwrap();
    assert!(
        client
            .import_hd_seed(&stack.keyring(), "x", policy, &[0x42; 64])
            .await
            .is_err()
    );
    let original = relay.seen(Method::ImportKey).pop().unwrap();
    // Even with a keyring admin's stamps (a fresh nonce would be one more edit), the 64 bytes
    // sealed as a seed do not open as a mnemonic or as a secret: the form is bound into the
    // ciphertext, not only into the stamped body.
    let mut host = relay.host();
    for (material, message) in [
        (
            pb::ImportMaterial::Mnemonic,
            "import ciphertext does not open",
        ),
        (
            pb::ImportMaterial::Secret,
            "import ciphertext has the wrong size",
        ),
    ] {
        let mut body = pb::RequestBody::decode(original.body.as_slice()).unwrap();
        if let Some(Operation::ImportKey(import)) = body.operation.as_mut() {
            import.material = material.into();
        }
        let status = host
            .import_key(stack.stamped(body.encode_to_vec(), &[&stack.admin_key()]))
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, message)
        );
    }
    // The request as sent imports the root.
    let key = host
        .import_key(original)
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(key.kind, i32::from(pb::KeyKind::HdRoot));
}

/// `SignBody` with its path widened to 64-bit indices, to send what a `uint32` cannot hold.
#[derive(Clone, PartialEq, prost::Message)]
struct WideSign {
    #[prost(string, tag = "1")]
    key_id: String,
    #[prost(int32, tag = "2")]
    scheme: i32,
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
    #[prost(uint64, repeated, tag = "4")]
    path: Vec<u64>,
}

/// `RequestBody` carrying a [`WideSign`].
#[derive(Clone, PartialEq, prost::Message)]
struct WideBody {
    #[prost(uint64, tag = "1")]
    timestamp_ms: u64,
    #[prost(bytes = "vec", tag = "2")]
    nonce: Vec<u8>,
    #[prost(message, optional, tag = "10")]
    sign: Option<WideSign>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_beyond_32_bits_is_invalid_not_truncated() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let account = parse_path("m/84'/0'/0'").unwrap();
    let id = root(&stack, &client, std::slice::from_ref(&account)).await;
    let genuine = pb::RequestBody::decode(
        client
            .body(Operation::Sign(pb::SignBody {
                key_id: id.clone(),
                scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
                payload: vec![1; 32],
                path: join(&account, &[0, 5]),
            }))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let wide = |last: u64| WideBody {
        timestamp_ms: genuine.timestamp_ms,
        nonce: genuine.nonce.clone(),
        sign: Some(WideSign {
            key_id: id.clone(),
            scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
            payload: vec![1; 32],
            path: account
                .iter()
                .map(|&i| u64::from(i))
                .chain([0, last])
                .collect(),
        }),
    };
    // 2^32 + 5 would truncate to index 5, a key the policy allows: refused as malformed.
    let overflow = stack.stamped(wide((1 << 32) + 5).encode_to_vec(), &[&stack.admin_key()]);
    let status = client.raw().sign(overflow).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // The same body with index 5 is the honest request, and signs.
    let honest = stack.stamped(wide(5).encode_to_vec(), &[&stack.admin_key()]);
    client.raw().sign(honest).await.unwrap();
}
