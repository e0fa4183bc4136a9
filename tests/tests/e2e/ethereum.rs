//! `SignEthereum` over real processes: a key under Ethereum rules signs what the rules allow and
//! each rule refuses the request beside it that breaks it; approval tiers need the second stamp
//! exactly above their bound; blind signing is closed; a hostile host can neither edit the
//! transaction nor get its digest signed another way; bad input is `INVALID_ARGUMENT`.

mod node;

use std::sync::Arc;

use alloy_consensus::{SignableTransaction as _, TxEip1559, TxEip2930, TxLegacy};
use alloy_network::{EthereumWallet, TransactionBuilder as _};
use alloy_primitives::{Address, TxKind, U256};
use alloy_provider::{Provider as _, ProviderBuilder};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_sol_types::{SolCall as _, sol};
use prost::Message as _;
use signer_client::ethereum::EthereumSigner;
use signer_client::pb::request_body::Operation;
use signer_client::pb::sign_ethereum_body::Payload;
use signer_client::{ApiKeyPair, ApiKeyScheme, Client, Error, pb};
use tests::relay::Method;
use tests::{HostileRelay, Stack, stamper};
use tonic::Code;

sol! {
    function transfer(address to, uint256 amount);
}

const BOB: Address = Address::repeat_byte(0xb0);
const EVE: Address = Address::repeat_byte(0xee);
const TOKEN: Address = Address::repeat_byte(0x70);
const DEX: Address = Address::repeat_byte(0xde);
const SWAP: [u8; 4] = [0x12, 0x34, 0x56, 0x78];
const GWEI: u128 = 1_000_000_000;
const ETHER: u64 = 1_000_000_000_000_000_000;

fn be(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(8);
    bytes[first..].to_vec()
}

/// A hot wallet's rules: mainnet only; value to Bob only, at most 10 ether a transaction and
/// 12 a day; one token (at most 1000 units a transfer); one swap call; two approvers above
/// 1 ether; Permit2 typed data on mainnet; no `personal_sign`.
fn rules() -> pb::EthereumRules {
    pb::EthereumRules {
        chain_ids: vec![1],
        destinations: vec![BOB.to_vec()],
        max_value_wei: be(10 * ETHER),
        max_value_per_day_wei: be(12 * ETHER),
        contract_calls: vec![pb::ContractCall {
            contract: DEX.to_vec(),
            selector: SWAP.to_vec(),
        }],
        tokens: vec![pb::TokenRule {
            contract: TOKEN.to_vec(),
            max_amount: be(1_000),
            ..Default::default()
        }],
        tiers: vec![pb::ApprovalTier {
            above_wei: be(ETHER),
            threshold: 2,
        }],
        typed_data_domains: vec![pb::TypedDataDomain {
            name: "Permit2".into(),
            chain_id: 1,
            verifying_contract: Vec::new(),
        }],
        ..Default::default()
    }
}

fn tx(chain_id: u64, nonce: u64, to: Option<Address>, value: U256, input: Vec<u8>) -> Vec<u8> {
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 60_000,
        max_fee_per_gas: 30 * GWEI,
        max_priority_fee_per_gas: GWEI,
        to: to.map_or(TxKind::Create, TxKind::Call),
        value,
        access_list: Default::default(),
        input: input.into(),
    };
    let mut out = Vec::new();
    tx.encode_for_signing(&mut out);
    out
}

fn send(value: U256, to: Address) -> Vec<u8> {
    tx(1, 0, Some(to), value, Vec::new())
}

fn token_transfer(to: Address, amount: u64) -> Vec<u8> {
    let call = transferCall {
        to,
        amount: U256::from(amount),
    };
    tx(1, 0, Some(TOKEN), U256::ZERO, call.abi_encode())
}

fn typed(name: &str) -> String {
    serde_json::json!({
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "chainId", "type": "uint256"}
            ],
            "Note": [{"name": "amount", "type": "uint256"}]
        },
        "primaryType": "Note",
        "domain": {"name": name, "chainId": 1},
        "message": {"amount": "7"}
    })
    .to_string()
}

/// The status of a refused call, or a panic naming what was signed instead.
fn refusal<T: std::fmt::Debug>(result: Result<T, Error>) -> (Code, String) {
    match result {
        Err(Error::Status(status)) => (status.code(), status.message().to_owned()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn denied(rule: &str) -> (Code, String) {
    (Code::PermissionDenied, rule.to_owned())
}

struct Wallet {
    stack: Stack,
    key_id: String,
    address: Address,
    /// Stamps with one approver.
    one: Client,
    /// Stamps with both.
    two: Client,
    approvers: [ApiKeyPair; 2],
}

async fn wallet(rules: pb::EthereumRules) -> Wallet {
    let stack = Stack::start("k256").await;
    let admin = stack.client().await;
    let approvers = [0; 2].map(|_| ApiKeyPair::generate(ApiKeyScheme::Ed25519).unwrap());
    let policy = pb::Policy {
        approvers: approvers.iter().map(ApiKeyPair::public).collect(),
        threshold: 1,
        schemes: vec![pb::SignatureScheme::EcdsaSecp256k1.into()],
        admins: vec![stack.admin_key().public()],
        admin_threshold: 1,
        ethereum: Some(rules),
        ..Default::default()
    };
    let key = admin
        .create_key_with(&stack.keyring(), "hot wallet", policy)
        .await
        .unwrap();
    let one = stack.client_with(Some(stamper(&[&approvers[0]]))).await;
    let two = stack
        .client_with(Some(stamper(&[&approvers[0], &approvers[1]])))
        .await;
    Wallet {
        address: key.ethereum_address.parse().unwrap(),
        key_id: key.key_id,
        stack,
        one,
        two,
        approvers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_refuses_what_breaks_it_and_passes_its_neighbour() {
    let w = wallet(rules()).await;
    let id = w.key_id.as_str();
    let ether = |n: u64| U256::from(n) * U256::from(ETHER);

    // The honest path: signed, verified by the SDK, and the broadcast form names our key.
    let signed = w
        .one
        .sign_transaction(id, &send(ether(1), BOB))
        .await
        .unwrap();
    assert_eq!(signed.encoded[0], 0x02, "an EIP-1559 envelope");
    let info = w.one.public_key(id).await.unwrap();
    assert_eq!(info.ethereum_address.parse::<Address>().unwrap(), w.address);

    // Chain, destination, contract creation.
    assert_eq!(
        refusal(
            w.two
                .sign_transaction(id, &tx(5, 0, Some(BOB), ether(1), Vec::new()))
                .await
        ),
        denied("chain not allowed")
    );
    assert_eq!(
        refusal(w.one.sign_transaction(id, &send(U256::from(1), EVE)).await),
        denied("destination not allowed")
    );
    assert_eq!(
        refusal(
            w.one
                .sign_transaction(id, &tx(1, 0, None, U256::ZERO, vec![0x60]))
                .await
        ),
        denied("contract creation not allowed")
    );

    // The approval tier: one stamp up to exactly 1 ether, two stamps one wei above it.
    let above = ether(1) + U256::from(1);
    assert_eq!(
        refusal(w.one.sign_transaction(id, &send(above, BOB)).await),
        denied("approval tier quorum not met")
    );
    w.two.sign_transaction(id, &send(above, BOB)).await.unwrap();

    // The per-transaction limit: 10 ether passes (two stamps), one wei more does not.
    assert_eq!(
        refusal(
            w.two
                .sign_transaction(id, &send(ether(10) + U256::from(1), BOB))
                .await
        ),
        denied("value above limit")
    );

    // Tokens: the amount limit and the recipient allow-list.
    w.one
        .sign_transaction(id, &token_transfer(BOB, 1_000))
        .await
        .unwrap();
    assert_eq!(
        refusal(
            w.one
                .sign_transaction(id, &token_transfer(BOB, 1_001))
                .await
        ),
        denied("token amount above limit")
    );
    assert_eq!(
        refusal(w.one.sign_transaction(id, &token_transfer(EVE, 1)).await),
        denied("destination not allowed")
    );

    // Contract calls: the listed (contract, selector) pair only.
    let call = |selector: [u8; 4]| {
        tx(
            1,
            0,
            Some(DEX),
            U256::ZERO,
            [&selector[..], &[0; 32]].concat(),
        )
    };
    w.one.sign_transaction(id, &call(SWAP)).await.unwrap();
    assert_eq!(
        refusal(
            w.one
                .sign_transaction(id, &call([0xde, 0xad, 0xbe, 0xef]))
                .await
        ),
        denied("contract call not allowed")
    );

    // Messages and typed data.
    assert_eq!(
        refusal(w.one.sign_personal_message(id, b"hello").await),
        denied("personal_sign not allowed")
    );
    w.one.sign_typed_data(id, &typed("Permit2")).await.unwrap();
    assert_eq!(
        refusal(w.one.sign_typed_data(id, &typed("Ether Mail")).await),
        denied("typed data domain not allowed")
    );

    // Blind signing: the transaction's own signing hash, computed client-side, is refused.
    let digest = alloy_primitives::keccak256(send(ether(1), BOB)).0;
    assert_eq!(
        refusal(w.one.sign_digest(id, digest).await),
        denied("blind signing not allowed")
    );

    // The daily total: 1 ether + (1 ether + 1 wei) so far. 10 more ether pass the
    // per-transaction limit but not the 12-ether day; 10 ether less 1 wei fill it exactly, which
    // they could not had any refusal above been counted; then not one wei more.
    let log = w.stack.log();
    assert!(
        log.contains("ethereum rule refused"),
        "the detail is logged"
    );
    assert_eq!(
        refusal(w.two.sign_transaction(id, &send(ether(10), BOB)).await),
        denied("daily value limit reached")
    );
    w.two
        .sign_transaction(id, &send(ether(10) - U256::from(1), BOB))
        .await
        .unwrap();
    assert_eq!(
        refusal(w.one.sign_transaction(id, &send(U256::from(1), BOB)).await),
        denied("daily value limit reached")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transaction_type_signs_and_rules_can_be_changed_by_the_admins() {
    let w = wallet(rules()).await;
    let id = w.key_id.as_str();
    let legacy = TxLegacy {
        chain_id: Some(1),
        nonce: 3,
        gas_price: 20 * GWEI,
        gas_limit: 21_000,
        to: TxKind::Call(BOB),
        value: U256::from(5),
        input: Default::default(),
    };
    let berlin = TxEip2930 {
        chain_id: 1,
        nonce: 4,
        gas_price: 20 * GWEI,
        gas_limit: 21_000,
        to: TxKind::Call(BOB),
        value: U256::from(5),
        access_list: Default::default(),
        input: Default::default(),
    };
    for unsigned in [
        {
            let mut out = Vec::new();
            legacy.encode_for_signing(&mut out);
            out
        },
        {
            let mut out = Vec::new();
            berlin.encode_for_signing(&mut out);
            out
        },
    ] {
        let signed = w.one.sign_transaction(id, &unsigned).await.unwrap();
        assert_eq!(signed.hash, alloy_primitives::keccak256(&signed.encoded).0);
    }

    // Only the key's admins change the rules; then Eve is an allowed destination.
    let admin = w.stack.client().await;
    let mut open = rules();
    open.destinations.push(EVE.to_vec());
    let policy = |rules| pb::Policy {
        approvers: w.approvers.iter().map(ApiKeyPair::public).collect(),
        threshold: 1,
        schemes: vec![pb::SignatureScheme::EcdsaSecp256k1.into()],
        admins: vec![w.stack.admin_key().public()],
        admin_threshold: 1,
        ethereum: Some(rules),
        ..Default::default()
    };
    assert_eq!(
        refusal(w.one.update_policy(id, policy(open.clone())).await).0,
        Code::PermissionDenied
    );
    let updated = admin.update_policy(id, policy(open)).await.unwrap();
    assert_eq!(updated.policy_version, 2);
    w.one
        .sign_transaction(id, &send(U256::from(1), EVE))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_host_cannot_edit_the_transaction_or_get_its_digest_signed() {
    let w = wallet(rules()).await;
    let id = w.key_id.clone();
    let relay = HostileRelay::start(&w.stack.address).await;
    let through = w
        .stack
        .client_at(relay.address.clone(), Some(stamper(&[&w.approvers[0]])))
        .await;

    // The host rewrites the destination of the stamped transaction: the stamps no longer hold.
    relay.tamper(Some(Arc::new(|method, request: &mut pb::SignedRequest| {
        if method != Method::SignEthereum {
            return;
        }
        let mut body = pb::RequestBody::decode(request.body.as_slice()).unwrap();
        if let Some(Operation::SignEthereum(eth)) = &mut body.operation
            && let Some(Payload::Transaction(bytes)) = &mut eth.payload
        {
            let at = bytes.windows(20).position(|w| w == BOB.as_slice()).unwrap();
            bytes[at..at + 20].copy_from_slice(EVE.as_slice());
        }
        request.body = body.encode_to_vec();
    })));
    let (code, _) = refusal(
        through
            .sign_transaction(&id, &send(U256::from(7), BOB))
            .await,
    );
    assert_eq!(code, Code::Unauthenticated);
    relay.tamper(None);

    // An honest request goes through; the host keeps it.
    through
        .sign_transaction(&id, &send(U256::from(8), BOB))
        .await
        .unwrap();
    let recorded = relay.seen(Method::SignEthereum).pop().unwrap();
    let mut host = relay.host();
    // Replayed: refused.
    assert_eq!(
        host.sign_ethereum(recorded.clone())
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    // Sent to the digest operation instead: that body is not a digest request.
    assert_eq!(
        host.sign(recorded).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // The host stamps a digest request with its own API key: not an approver.
    let digest = alloy_primitives::keccak256(send(U256::from(9), EVE)).0;
    let body = through
        .body(Operation::Sign(pb::SignBody {
            key_id: id.clone(),
            scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
            payload: digest.to_vec(),
            path: Vec::new(),
        }))
        .unwrap();
    let own = ApiKeyPair::generate(ApiKeyScheme::Ed25519).unwrap();
    let status = host
        .sign(w.stack.stamped(body.clone(), &[&own]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // Even an approver's genuine stamp on a digest request is refused for this key.
    let status = host
        .sign(w.stack.stamped(body, &[&w.approvers[0]]))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::PermissionDenied, "blind signing not allowed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ethereum_payloads_are_invalid_arguments() {
    let w = wallet(pb::EthereumRules {
        allow_personal_sign: true,
        typed_data_domains: vec![pb::TypedDataDomain::default()],
        ..rules()
    })
    .await;
    let id = w.key_id.as_str();
    let good = send(U256::from(1), BOB);
    let mut trailing = good.clone();
    trailing.push(0x80);
    let mut blob = good.clone();
    blob[0] = 0x03;
    let cases: Vec<(&str, Payload)> = vec![
        ("truncated", Payload::Transaction(good[..good.len() - 3].to_vec())),
        ("trailing", Payload::Transaction(trailing)),
        ("wrong type", Payload::Transaction(blob)),
        ("empty", Payload::Transaction(Vec::new())),
        ("huge", Payload::Transaction(vec![0xc0; 40_000])),
        ("long message", Payload::PersonalMessage(vec![b'a'; 20_000])),
        ("huge typed data", Payload::TypedData(" ".repeat(40_000))),
        ("not json", Payload::TypedData("{".into())),
        (
            "deep typed data",
            Payload::TypedData(typed("Permit2").replace(
                "\"7\"}",
                &format!("\"7\", \"x\": {}{}}}", "[".repeat(40), "]".repeat(40)),
            )),
        ),
        (
            "recursive types",
            Payload::TypedData(typed("Permit2").replace(
                "\"Note\":[",
                "\"Note\":[{\"name\":\"next\",\"type\":\"Note\"},",
            )),
        ),
        (
            "above 2^256",
            Payload::TypedData(typed("Permit2").replace(
                "\"7\"",
                "\"115792089237316195423570985008687907853269984665640564039457584007913129639936\"",
            )),
        ),
    ];
    let mut raw = w.one.raw();
    for (name, payload) in cases {
        let body = w
            .one
            .body(Operation::SignEthereum(pb::SignEthereumBody {
                key_id: id.to_owned(),
                payload: Some(payload),
                path: Vec::new(),
            }))
            .unwrap();
        let status = raw
            .sign_ethereum(w.stack.stamped(body, &[&w.approvers[0]]))
            .await
            .err()
            .unwrap_or_else(|| panic!("{name}: signed"));
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
    }
    // The enclave still serves: the well-formed neighbours sign.
    w.one.sign_transaction(id, &good).await.unwrap();
    w.one.sign_personal_message(id, b"hello").await.unwrap();
    w.one.sign_typed_data(id, &typed("Permit2")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alloy_provider_fills_and_sends_a_transaction_the_enclave_signed() {
    const CHAIN: u64 = 31_337;
    let w = wallet(pb::EthereumRules {
        chain_ids: vec![CHAIN],
        allow_personal_sign: true,
        ..rules()
    })
    .await;
    let node = node::Node::start(CHAIN, &[(w.address, U256::from(10 * ETHER))]).await;
    let signer = EthereumSigner::new(w.one.clone(), &w.key_id).await.unwrap();
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(signer.clone()))
        .connect_http(node.url.parse().unwrap());

    // alloy fills chain id, nonce, gas and fees from the node; the enclave reads, judges and
    // signs; the node recovers the sender and executes it.
    let value = U256::from(ETHER / 10);
    let pending = provider
        .send_transaction(TransactionRequest::default().with_to(BOB).with_value(value))
        .await
        .unwrap();
    assert_eq!(node.senders(), vec![w.address]);
    assert_eq!(provider.get_balance(BOB).await.unwrap(), value);
    assert_eq!(provider.get_transaction_count(w.address).await.unwrap(), 1);
    assert_ne!(*pending.tx_hash(), alloy_primitives::B256::ZERO);

    // A second one fills the next nonce.
    let _second = provider
        .send_transaction(TransactionRequest::default().with_to(BOB).with_value(value))
        .await
        .unwrap();
    assert_eq!(
        provider.get_balance(BOB).await.unwrap(),
        value * U256::from(2)
    );

    // What the rules refuse never reaches the chain, and the provider says why.
    let refused = provider
        .send_transaction(
            TransactionRequest::default()
                .with_to(EVE)
                .with_value(U256::from(1)),
        )
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("destination not allowed"),
        "{refused}"
    );
    assert_eq!(node.senders().len(), 2);

    // Messages through alloy's `Signer`: read by the enclave, recovered here.
    let signature = alloy_signer::Signer::sign_message(&signer, b"hello")
        .await
        .unwrap();
    assert_eq!(
        signature.recover_address_from_msg(b"hello").unwrap(),
        w.address
    );
    // A raw hash through the same trait is blind signing, which the rules close.
    let blind = alloy_signer::Signer::sign_hash(&signer, &alloy_primitives::B256::repeat_byte(1))
        .await
        .unwrap_err();
    assert!(
        blind.to_string().contains("blind signing not allowed"),
        "{blind}"
    );
}

fn cli(stack: &Stack, args: &[&str]) -> Result<serde_json::Value, serde_json::Value> {
    stack.cli(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_rules_and_signs_transactions_messages_and_typed_data() {
    let stack = Stack::start("k256").await;
    stack.client().await;
    let keyring = stack.keyring();
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, value: serde_json::Value| {
        let path = files.path().join(name);
        std::fs::write(&path, value.to_string()).unwrap();
        path.display().to_string()
    };
    let key = tokio::task::block_in_place(|| {
        cli(
            &stack,
            &["create-key", "--keyring", &keyring, "--scheme", "ecdsa"],
        )
        .unwrap()
    });
    let id = key["key_id"].as_str().unwrap().to_owned();
    let rules = write(
        "rules.json",
        serde_json::json!({
            "chain_ids": [1],
            "destinations": [BOB.to_string()],
            "max_value_wei": "1000",
            "typed_data_domains": [{"name": "Permit2"}]
        }),
    );
    let tx = |value: u64| {
        write(
            &format!("tx-{value}.json"),
            serde_json::json!({
                "chainId": "0x1", "nonce": "0x0", "to": BOB.to_string(), "value": format!("{value:#x}"),
                "gas": "0x5208", "maxFeePerGas": "0x6fc23ac00", "maxPriorityFeePerGas": "0x3b9aca00"
            }),
        )
    };
    let (under, over) = (tx(1000), tx(1001));
    let typed_data = write(
        "typed.json",
        serde_json::from_str(&typed("Permit2")).unwrap(),
    );
    tokio::task::block_in_place(|| {
        // Before the rules: a message signs.
        cli(
            &stack,
            &["sign-message", "--key", &id, "--message", "hello"],
        )
        .unwrap();
        let updated = cli(
            &stack,
            &[
                "set-policy",
                &id,
                "--scheme",
                "ecdsa",
                "--ethereum-rules",
                &rules,
            ],
        )
        .unwrap();
        assert_eq!(updated["policy"]["ethereum"]["max_value_wei"], "1000");
        let signed = cli(&stack, &["sign-tx", "--key", &id, "--tx", &under]).unwrap();
        assert!(signed["encoded"].as_str().unwrap().starts_with("0x02"));
        let refused = cli(&stack, &["sign-tx", "--key", &id, "--tx", &over]).unwrap_err();
        assert_eq!(refused["code"], "PermissionDenied");
        assert!(
            refused["error"]
                .as_str()
                .unwrap()
                .contains("value above limit")
        );
        let refused = cli(
            &stack,
            &["sign-message", "--key", &id, "--message", "hello"],
        )
        .unwrap_err();
        assert!(
            refused["error"]
                .as_str()
                .unwrap()
                .contains("personal_sign not allowed")
        );
        let typed = cli(
            &stack,
            &["sign-typed-data", "--key", &id, "--file", &typed_data],
        )
        .unwrap();
        assert_eq!(typed["signature"].as_str().unwrap().len(), 2 + 130);
    });
}
