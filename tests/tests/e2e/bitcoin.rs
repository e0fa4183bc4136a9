//! `SignPsbt` over real processes: PSBTs of P2WPKH, P2SH-P2WPKH and Taproot inputs signed by an
//! HD root, finalised and checked by Bitcoin Core's interpreter; each Bitcoin rule refusing the
//! transaction that breaks it next to the one that passes; a hostile host that edits the PSBT
//! on the way in or the signatures on the way out; blind signing under Bitcoin rules closed.

mod consensus;

use std::sync::Arc;

use bitcoin::psbt::Psbt;
use consensus::verify_with_core;
use prost::Message as _;
use signer_client::pb::request_body::Operation;
use signer_client::{Client, Error, pb, policy};
use tests::relay::Method;
use tests::wallet::{self, Foreign, Kind, Wallet, finalise, pay, psbt};
use tests::{HostileRelay, Stack};
use tonic::Code;

const ALICE: u8 = 0xa1;
const EVE: u8 = 0xee;

/// Alice may be paid; at most 1 000 000 sat a transaction and 1 500 000 a day; fees at most
/// 20 000 sat and 50 sat/vB.
fn rules() -> pb::BitcoinRules {
    pb::BitcoinRules {
        destinations: vec![Foreign::new(ALICE).script().to_bytes()],
        max_sat_per_tx: 1_000_000,
        max_sat_per_day: 1_500_000,
        max_fee_sat: 20_000,
        max_fee_rate_sat_per_vb: 50,
        allow_blind_signing: false,
    }
}

async fn root(stack: &Stack, client: &Client, rules: Option<pb::BitcoinRules>) -> String {
    let subtrees: Vec<_> = [Kind::P2wpkh, Kind::P2shP2wpkh, Kind::P2tr]
        .into_iter()
        .map(Kind::account)
        .collect();
    let policy = pb::Policy {
        bitcoin: rules,
        ..policy::hd_root_for(&stack.admin_stamper(), &subtrees).unwrap()
    };
    client
        .create_hd_root(&stack.keyring(), "btc", policy)
        .await
        .unwrap()
        .key_id
}

fn refusal<T: std::fmt::Debug>(result: Result<T, Error>) -> (Code, String) {
    match result {
        Err(Error::Status(status)) => (status.code(), status.message().to_owned()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn denied(rule: &str) -> (Code, String) {
    (Code::PermissionDenied, rule.to_owned())
}

/// The enclave's floor on the signed size (SPEC.md): the unsigned transaction, marker and flag,
/// and the root's witnesses at their smallest; other inputs without witness.
fn vsize_floor(psbt: &Psbt, kinds: &[Kind]) -> u64 {
    let witnesses: u64 = kinds
        .iter()
        .map(|kind| match kind {
            Kind::P2wpkh => 107,
            Kind::P2shP2wpkh => 107 + 92,
            Kind::P2tr => 66,
        })
        .sum();
    (psbt.unsigned_tx.weight().to_wu() + 2 + witnesses).div_ceil(4)
}

async fn sign_and_verify(backend: &str) {
    let stack = Stack::start(backend).await;
    let client = stack.client().await;
    let id = root(&stack, &client, Some(rules())).await;
    let wallet = Wallet::open(&client, &id).await;
    let other_party = Foreign::new(0x0b);
    let alice = Foreign::new(ALICE);
    let mut unsigned = psbt(
        vec![
            wallet.input(Kind::P2wpkh, 0, 400_000),
            wallet.input(Kind::P2shP2wpkh, 0, 300_000),
            other_party.input(&wallet, 100_000),
            wallet.input(Kind::P2tr, 0, 500_000),
        ],
        vec![
            pay(&alice.script(), 800_000),
            wallet.change(Kind::P2wpkh, 0, 495_000),
        ],
    );
    // Another party's input is left as it was.
    let before = unsigned.inputs[2].clone();
    let signed = client.sign_psbt(&id, &unsigned).await.unwrap();
    assert_eq!(signed.signed_inputs, [0, 1, 3]);
    assert_eq!(signed.psbt.inputs[2], before);
    assert_eq!(signed.psbt.unsigned_tx, unsigned.unsigned_tx);
    // The SDK handed back what it verified; Bitcoin Core's interpreter agrees, every input.
    let mut done = signed.psbt;
    finalise(&mut done, &signed.signed_inputs);
    other_party.sign(&mut done, 2);
    let tx = verify_with_core(&done);
    assert_eq!(tx.input.len(), 4);
    assert!(
        tx.input[1].script_sig.len() == 23,
        "P2SH-P2WPKH pushes its redeem script"
    );

    // A Taproot-only spend commits to every amount; Core verifies it too.
    unsigned = psbt(
        vec![
            wallet.input(Kind::P2tr, 1, 200_000),
            wallet.input(Kind::P2tr, 2, 200_000),
        ],
        vec![
            pay(&alice.script(), 100_000),
            wallet.change(Kind::P2tr, 0, 299_000),
        ],
    );
    let signed = client.sign_psbt(&id, &unsigned).await.unwrap();
    let mut done = signed.psbt;
    finalise(&mut done, &signed.signed_inputs);
    verify_with_core(&done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psbts_signed_by_k256_verify_in_bitcoin_core() {
    sign_and_verify("k256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psbts_signed_by_libsecp256k1_verify_in_bitcoin_core() {
    sign_and_verify("secp256k1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bitcoin_rule_refuses_what_breaks_it_and_passes_its_neighbour() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let id = root(&stack, &client, Some(rules())).await;
    let other_id = root(&stack, &client, Some(rules())).await;
    let wallet = Wallet::open(&client, &id).await;
    let other_root = Wallet::open(&client, &other_id).await;
    let alice = Foreign::new(ALICE).script();
    let eve = Foreign::new(EVE).script();
    let spend = |outputs| psbt(vec![wallet.input(Kind::P2wpkh, 1, 2_000_000)], outputs);
    let sign = |psbt: Psbt| {
        let client = client.clone();
        let id = id.clone();
        async move { client.sign_psbt(&id, &psbt).await }
    };
    let change = |value| wallet.change(Kind::P2wpkh, 1, value);

    // Allowed: 100 000 to Alice (running daily total 100 000).
    sign(spend(vec![pay(&alice, 100_000), change(1_899_000)]))
        .await
        .unwrap();
    // Off the allow-list.
    assert_eq!(
        refusal(sign(spend(vec![pay(&eve, 100_000), change(1_899_000)])).await),
        denied("destination not allowed")
    );
    // Per transaction: one sat over is refused, the limit itself passes (total 1 100 000).
    assert_eq!(
        refusal(sign(spend(vec![pay(&alice, 1_000_001), change(998_999)])).await),
        denied("value above the per-transaction limit")
    );
    sign(spend(vec![pay(&alice, 1_000_000), change(999_000)]))
        .await
        .unwrap();

    // The absolute fee cap, on a transaction big enough that the rate is low (total 1 101 000).
    let many = |fee: u64| {
        let inputs = (10..18)
            .map(|i| wallet.input(Kind::P2wpkh, i, 100_000))
            .collect();
        psbt(inputs, vec![pay(&alice, 1_000), change(799_000 - fee)])
    };
    assert_eq!(
        refusal(sign(many(20_001)).await),
        denied("fee above the cap")
    );
    sign(many(20_000)).await.unwrap();
    // The rate cap, against the floor of the signed size (total 1 102 000).
    let probe = spend(vec![pay(&alice, 1_000), change(0)]);
    let cap = 50 * vsize_floor(&probe, &[Kind::P2wpkh]);
    let with_fee = |fee: u64| spend(vec![pay(&alice, 1_000), change(1_999_000 - fee)]);
    assert_eq!(
        refusal(sign(with_fee(cap + 1)).await),
        denied("fee rate above the cap")
    );
    sign(with_fee(cap)).await.unwrap();

    // Fake change: an output naming another root (its fingerprint and path, its script), a
    // claim under this root's fingerprint whose script pays another key, and one whose path is
    // outside the root's subtrees. Each is a payment off the allow-list; real change passes
    // (total 1 103 000).
    let fakes = [
        other_root.change(Kind::P2wpkh, 0, 1_998_000),
        {
            let (mut out, origin) = change(1_998_000);
            out.script_pubkey = eve.clone();
            (out, origin)
        },
        {
            let (out, mut origin) = change(1_998_000);
            for (_, path) in origin.bip32_derivation.values_mut() {
                *path = vec![
                    wallet::hardened(84),
                    wallet::hardened(1),
                    wallet::hardened(7),
                    1,
                    1,
                ]
                .into_iter()
                .map(bitcoin::bip32::ChildNumber::from)
                .collect();
            }
            (out, origin)
        },
    ];
    for fake in fakes {
        assert_eq!(
            refusal(sign(spend(vec![pay(&alice, 1_000), fake])).await),
            denied("destination not allowed")
        );
    }
    sign(spend(vec![pay(&alice, 1_000), change(1_998_000)]))
        .await
        .unwrap();

    // The daily total: up to 1 500 000 passes, one sat more is refused.
    sign(spend(vec![pay(&alice, 397_000), change(1_602_000)]))
        .await
        .unwrap();
    assert_eq!(
        refusal(sign(spend(vec![pay(&alice, 1), change(1_998_999)])).await),
        denied("daily bitcoin limit reached")
    );
    // Change only (a consolidation) still passes: it pays nobody.
    sign(spend(vec![change(1_999_000)])).await.unwrap();
}

/// The rate limit counts signatures: a PSBT takes one token per input it signs, all or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psbt_takes_a_rate_limit_token_per_input_signed() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let subtrees: Vec<_> = [Kind::P2wpkh, Kind::P2shP2wpkh, Kind::P2tr]
        .into_iter()
        .map(Kind::account)
        .collect();
    let policy = pb::Policy {
        bitcoin: Some(rules()),
        max_signatures_per_minute: 4,
        ..policy::hd_root_for(&stack.admin_stamper(), &subtrees).unwrap()
    };
    let id = client
        .create_hd_root(&stack.keyring(), "limited", policy)
        .await
        .unwrap()
        .key_id;
    let wallet = Wallet::open(&client, &id).await;
    let alice = Foreign::new(ALICE).script();
    let spending = |indices: std::ops::Range<u32>| {
        let n = u64::from(indices.end - indices.start);
        let inputs = indices
            .map(|i| wallet.input(Kind::P2wpkh, i, 100_000))
            .collect();
        psbt(
            inputs,
            vec![
                pay(&alice, 1_000),
                wallet.change(Kind::P2wpkh, 0, n * 100_000 - 1_000 - 2_000),
            ],
        )
    };
    // Three inputs: three of the four tokens.
    let signed = client.sign_psbt(&id, &spending(0..3)).await.unwrap();
    assert_eq!(signed.signed_inputs, [0, 1, 2]);
    // Two more do not fit in the one left: refused whole, and nothing taken.
    let (code, _) = refusal(client.sign_psbt(&id, &spending(3..5)).await);
    assert_eq!(code, Code::ResourceExhausted);
    let signed = client.sign_psbt(&id, &spending(5..6)).await.unwrap();
    assert_eq!(signed.signed_inputs, [0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_host_cannot_edit_the_psbt_or_its_signatures() {
    let stack = Stack::start("k256").await;
    let admin = stack.client().await;
    let id = root(&stack, &admin, Some(rules())).await;
    let wallet = Wallet::open(&admin, &id).await;
    let relay = HostileRelay::start(&stack.address).await;
    let client = stack
        .client_at(relay.address.clone(), Some(stack.admin_stamper()))
        .await;
    let alice = Foreign::new(ALICE).script();
    let honest = psbt(
        vec![
            wallet.input(Kind::P2wpkh, 3, 300_000),
            wallet.input(Kind::P2tr, 3, 300_000),
        ],
        vec![pay(&alice, 100_000), wallet.change(Kind::P2tr, 3, 499_000)],
    );

    // After stamping, the host pays Eve instead, or lowers an input's amount so the fee looks
    // small: the stamps no longer cover the body.
    let edits: [fn(&mut Psbt); 2] = [
        |psbt| psbt.unsigned_tx.output[0].script_pubkey = Foreign::new(EVE).script(),
        |psbt| psbt.inputs[0].witness_utxo.as_mut().unwrap().value = bitcoin::Amount::from_sat(1),
    ];
    for edit in edits {
        relay.tamper(Some(Arc::new(move |method, request| {
            if method != Method::SignPsbt {
                return;
            }
            let mut body = pb::RequestBody::decode(request.body.as_slice()).unwrap();
            if let Some(Operation::SignPsbt(sign)) = body.operation.as_mut() {
                let mut psbt = Psbt::deserialize(&sign.psbt).unwrap();
                edit(&mut psbt);
                sign.psbt = psbt.serialize();
            }
            request.body = body.encode_to_vec();
        })));
        assert_eq!(
            refusal(client.sign_psbt(&id, &honest).await).0,
            Code::Unauthenticated
        );
    }
    relay.tamper(None);

    // On the way back: a signature altered, one moved to another input, the transaction
    // swapped. The SDK keeps nothing it did not verify.
    let replies: [fn(&mut Psbt); 3] = [
        |psbt| {
            let sig = psbt.inputs[1].tap_key_sig.as_mut().unwrap();
            let mut bytes = sig.signature.serialize();
            bytes[5] ^= 1;
            sig.signature = bitcoin::secp256k1::schnorr::Signature::from_slice(&bytes).unwrap();
        },
        |psbt| {
            let sigs = std::mem::take(&mut psbt.inputs[0].partial_sigs);
            psbt.inputs[1].partial_sigs = sigs;
        },
        |psbt| psbt.unsigned_tx.output[1].value = bitcoin::Amount::from_sat(1),
    ];
    for edit in replies {
        relay.tamper_psbt_reply(Some(Arc::new(move |reply| {
            let mut psbt = Psbt::deserialize(&reply.psbt).unwrap();
            edit(&mut psbt);
            reply.psbt = psbt.serialize();
        })));
        match client.sign_psbt(&id, &honest).await {
            Err(Error::Verification(_)) => {}
            other => panic!("an edited answer passed: {other:?}"),
        }
    }
    relay.tamper_psbt_reply(None);
    let signed = client.sign_psbt(&id, &honest).await.unwrap();
    let mut done = signed.psbt;
    finalise(&mut done, &signed.signed_inputs);
    verify_with_core(&done);

    // Under Bitcoin rules the raw sighash route is closed: a client cannot compute a sighash
    // itself and have it signed by a key under the root.
    let path = wallet.key(Kind::P2wpkh, 0, 0).1;
    assert_eq!(
        refusal(client.sign_digest_at(&id, &path, [7; 32]).await),
        denied("blind signing not allowed")
    );
    assert_eq!(
        refusal(client.sign_schnorr_at(&id, &path, &[7; 32]).await),
        denied("blind signing not allowed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_that_do_not_hold_and_roots_without_rules_are_refused() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let id = root(&stack, &client, Some(rules())).await;
    let wallet = Wallet::open(&client, &id).await;
    let alice = Foreign::new(ALICE).script();
    let outputs = || vec![pay(&alice, 1_000), wallet.change(Kind::P2wpkh, 2, 98_000)];

    // An input naming the root with a path outside its subtrees.
    let (txin, mut input) = wallet.input(Kind::P2wpkh, 4, 100_000);
    for (_, path) in input.bip32_derivation.values_mut() {
        *path = [
            wallet::hardened(44),
            wallet::hardened(0),
            wallet::hardened(0),
            0,
            0,
        ]
        .into_iter()
        .map(bitcoin::bip32::ChildNumber::from)
        .collect();
    }
    assert_eq!(
        refusal(
            client
                .sign_psbt(&id, &psbt(vec![(txin, input)], outputs()))
                .await
        )
        .0,
        Code::PermissionDenied
    );
    // An input whose script pays another key than the one at its path.
    let (txin, mut input) = wallet.input(Kind::P2wpkh, 5, 100_000);
    input.witness_utxo.as_mut().unwrap().script_pubkey = wallet.script(Kind::P2wpkh, 0, 6);
    assert_eq!(
        refusal(
            client
                .sign_psbt(&id, &psbt(vec![(txin, input)], outputs()))
                .await
        )
        .0,
        Code::InvalidArgument
    );
    // A PSBT none of whose inputs is the root's.
    let stranger = Foreign::new(0x33);
    assert_eq!(
        refusal(
            client
                .sign_psbt(
                    &id,
                    &psbt(vec![stranger.input(&wallet, 100_000)], outputs())
                )
                .await
        ),
        denied("no input of the PSBT is this root's")
    );
    // A root without Bitcoin rules signs no PSBT; a single key is no root.
    let bare = root(&stack, &client, None).await;
    let bare_wallet = Wallet::open(&client, &bare).await;
    let theirs = psbt(
        vec![bare_wallet.input(Kind::P2wpkh, 0, 100_000)],
        vec![pay(&alice, 1_000)],
    );
    assert_eq!(
        refusal(client.sign_psbt(&bare, &theirs).await),
        denied("no bitcoin rules")
    );
    let single = client.create_key(&stack.keyring(), "single").await.unwrap();
    assert_eq!(
        refusal(client.sign_psbt(&single.key_id, &theirs).await).0,
        Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_psbts_are_invalid_argument() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let id = root(&stack, &client, Some(rules())).await;
    let wallet = Wallet::open(&client, &id).await;
    let alice = Foreign::new(ALICE).script();
    let raw = |bytes: Vec<u8>| {
        let body = client
            .body(Operation::SignPsbt(pb::SignPsbtBody {
                key_id: id.clone(),
                psbt: bytes,
            }))
            .unwrap();
        let request = stack.stamped(body, &[&stack.admin_key()]);
        let client = client.clone();
        async move {
            client
                .raw()
                .sign_psbt(request)
                .await
                .map(|_| ())
                .unwrap_err()
        }
    };
    let good = psbt(
        vec![wallet.input(Kind::P2wpkh, 7, 100_000)],
        vec![pay(&alice, 1_000), wallet.change(Kind::P2wpkh, 7, 98_000)],
    );
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    cases.push(("not a PSBT", b"not a psbt at all".to_vec()));
    cases.push(("empty", Vec::new()));
    let mut trailing = good.serialize();
    trailing.push(0);
    cases.push(("bytes after it", trailing));
    let mut truncated = good.serialize();
    truncated.truncate(truncated.len() / 2);
    cases.push(("truncated", truncated));
    // The global unsigned transaction twice: a duplicate key in a map.
    let bytes = good.serialize();
    assert_eq!(
        &bytes[5..7],
        [1, 0],
        "the first global record is the unsigned tx"
    );
    let record = 7 + 1 + usize::from(bytes[7]);
    let duplicated = [&bytes[..5], &bytes[5..record], &bytes[5..]].concat();
    cases.push(("duplicate key", duplicated));
    // An input without the UTXO data the fee and amount rules need.
    let mut no_utxo = good.clone();
    no_utxo.inputs[0].witness_utxo = None;
    cases.push(("no witness_utxo", no_utxo.serialize()));
    // A non_witness_utxo that is not the transaction spent.
    let mut wrong_previous = good.clone();
    wrong_previous.inputs[0].non_witness_utxo = Some(good.unsigned_tx.clone());
    cases.push(("wrong non_witness_utxo", wrong_previous.serialize()));
    // Outputs worth more than the inputs.
    let mut overspent = good.clone();
    overspent.unsigned_tx.output[0].value = bitcoin::Amount::from_sat(100_000);
    cases.push(("negative fee", overspent.serialize()));
    // A derivation path 256 deep under this root's fingerprint.
    let mut deep = good.clone();
    for (_, path) in deep.inputs[0].bip32_derivation.values_mut() {
        *path = vec![bitcoin::bip32::ChildNumber::from(0); 256].into();
    }
    cases.push(("path deeper than 255", deep.serialize()));
    // 501 inputs: within a body, above the enclave's bound.
    let wide = psbt(
        (0..501)
            .map(|_| Foreign::new(0x44).input(&wallet, 1_000))
            .collect(),
        vec![pay(&alice, 1_000)],
    );
    assert!(wide.serialize().len() < signer_proto::MAX_BODY_BYTES);
    cases.push(("501 inputs", wide.serialize()));
    // 3 000 inputs: above the 64 KiB body limit (the host refuses it before the enclave).
    let huge = psbt(
        (0..3_000).map(|_| wallet::bare_input(&wallet)).collect(),
        vec![pay(&alice, 1_000)],
    );
    cases.push(("3000 inputs", huge.serialize()));
    for (name, bytes) in cases {
        let status = raw(bytes).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
    }
    // 10 000 inputs: the SDK refuses to send what no body can carry.
    let ten_thousand = psbt(
        (0..10_000)
            .map(|_| Foreign::new(0x44).input(&wallet, 1_000))
            .collect(),
        vec![pay(&alice, 1_000)],
    );
    assert!(matches!(
        client.sign_psbt(&id, &ten_thousand).await,
        Err(Error::InvalidArgument(_))
    ));
    // The honest PSBT beside them signs.
    client.sign_psbt(&id, &good).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_a_root_exports_xpubs_derives_addresses_and_signs_psbts() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let keyring = stack.keyring();
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let alice =
        bitcoin::Address::from_script(&Foreign::new(ALICE).script(), bitcoin::Network::Testnet)
            .unwrap();
    let rules = write(
        "rules.json",
        serde_json::json!({
            "network": "testnet", "destinations": [alice.to_string()],
            "max_sat_per_tx": 1_000_000, "max_sat_per_day": 1_500_000,
            "max_fee_sat": 20_000, "max_fee_rate_sat_per_vb": 50
        })
        .to_string(),
    );
    let cli = |args: &[&str]| tokio::task::block_in_place(|| stack.cli(args));
    let root = cli(&[
        "create-hd-root",
        "--keyring",
        &keyring,
        "--label",
        "cli",
        "--subtree",
        "m/84'/1'/0'",
        "--subtree",
        "m/49'/1'/0'",
        "--subtree",
        "m/86'/1'/0'",
        "--bitcoin-rules",
        &rules,
    ])
    .unwrap();
    let id = root["key_id"].as_str().unwrap().to_owned();
    // The policy shows the destination as the script the enclave holds (no network is sealed).
    assert_eq!(
        root["policy"]["bitcoin"]["destinations"][0],
        alice.script_pubkey().to_hex_string()
    );

    // The account xpub, as vpub (BIP-84 testnet), and an address derived from it offline is the
    // one the SDK's wallet pays.
    let xpub = cli(&[
        "xpub",
        "--root",
        &id,
        "--path",
        "m/84'/1'/0'",
        "--version",
        "vpub",
    ])
    .unwrap();
    let vpub = xpub["xpub"].as_str().unwrap().to_owned();
    assert!(vpub.starts_with("vpub"), "{vpub}");
    let wallet = Wallet::open(&client, &id).await;
    let address = cli(&[
        "derive-address",
        "--xpub",
        &vpub,
        "--chain",
        "0",
        "--index",
        "3",
    ])
    .unwrap();
    let expected = bitcoin::Address::from_script(
        &wallet.script(Kind::P2wpkh, 0, 3),
        bitcoin::Network::Testnet,
    )
    .unwrap();
    assert_eq!(address["address"], expected.to_string());
    assert_eq!(
        cli(&["xpub", "--root", &id, "--path", "m/84'/0'/0'"]).unwrap_err()["code"],
        "PermissionDenied"
    );

    // A PSBT in base64 from a file, signed, out in base64; Core verifies it once finalised.
    let unsigned = psbt(
        vec![wallet.input(Kind::P2wpkh, 3, 100_000)],
        vec![
            pay(&Foreign::new(ALICE).script(), 50_000),
            wallet.change(Kind::P2wpkh, 3, 49_000),
        ],
    );
    let file = write("tx.psbt", unsigned.to_string());
    let signed = cli(&["sign-psbt", "--root", &id, "--psbt", &file]).unwrap();
    assert_eq!(signed["signed_inputs"], serde_json::json!([0]));
    let mut done: Psbt = signed["psbt"].as_str().unwrap().parse().unwrap();
    finalise(&mut done, &[0]);
    verify_with_core(&done);
    // Off the allow-list: refused, and the CLI says which rule.
    let eve = psbt(
        vec![wallet.input(Kind::P2wpkh, 4, 100_000)],
        vec![pay(&Foreign::new(EVE).script(), 50_000)],
    );
    let file = write("eve.psbt", eve.to_string());
    let refused = cli(&["sign-psbt", "--root", &id, "--psbt", &file]).unwrap_err();
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("destination not allowed"),
        "{refused}"
    );
}
