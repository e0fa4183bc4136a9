//! Known answers for every payload kind (EIP-155's worked example, 320 ethers.js transactions in
//! three encodings, the EIP-712 "Mail" example and 130 ethers.js typed-data digests, EIP-191
//! messages), each signed by both backends; then what the intake refuses.

use alloy_primitives::{Address, U256};
use serde_json::{Value, json};

use super::*;
use crate::backend::{Backend, K256, Libsecp256k1};
use crate::secret::WalletSecret;

const VECTORS: &str = include_str!("../../../../testdata/vectors/ethereum_vectors.json");
const ETHERS_TXS: &str =
    include_str!("../../../../testdata/vectors/ethers_transactions_subset.json");
const ETHERS_TYPED: &str = include_str!("../../../../testdata/vectors/ethers_typed-data.json");

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.trim_start_matches("0x")).expect("hex in vectors qed")
}

fn vectors() -> Value {
    serde_json::from_str(VECTORS).unwrap()
}

/// Signs `payload` with `private_key` on backend `B`, as the service does.
fn sign<B: Backend>(private_key: &str, payload: EthPayload) -> pb::SignEthereumResponse {
    let secret: [u8; 32] = unhex(private_key).try_into().unwrap();
    let key = B::load(&WalletSecret::from_bytes(&secret)).unwrap();
    let signature = B::sign_ecdsa(&key, &payload.digest());
    assert!(signature.recovery_id <= 1);
    response(
        &KeyId::random().unwrap(),
        payload,
        &signature.rs,
        signature.recovery_id == 1,
    )
}

fn tx_payload(bytes: &[u8]) -> EthPayload {
    EthPayload::Transaction(Box::new(transaction(bytes).unwrap()))
}

fn invalid(result: Result<impl std::fmt::Debug, Error>) -> &'static str {
    match result {
        Err(Error::InvalidArgument(why)) => why,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

#[test]
fn eip155_example_signs_to_the_published_transaction() {
    let v = &vectors()["eip155_example"];
    let unsigned = unhex(v["signing_data"].as_str().unwrap());
    let tx = transaction(&unsigned).unwrap();
    assert_eq!(
        tx.facts,
        TxFacts {
            chain_id: 1,
            to: Some(Address::repeat_byte(0x35)),
            value: U256::from(10u64).pow(U256::from(18)),
            call: Call::None,
        }
    );
    for response in [
        sign::<K256>(v["private_key"].as_str().unwrap(), tx_payload(&unsigned)),
        sign::<Libsecp256k1>(v["private_key"].as_str().unwrap(), tx_payload(&unsigned)),
    ] {
        assert_eq!(response.digest, unhex(v["signing_hash"].as_str().unwrap()));
        assert_eq!(
            response.signed_transaction,
            unhex(v["signed_tx"].as_str().unwrap())
        );
        assert_eq!(
            response.transaction_hash,
            unhex(v["tx_hash"].as_str().unwrap())
        );
        let r = unhex(v["r_hex"].as_str().unwrap());
        assert_eq!(&response.signature[..32], r.as_slice());
    }
}

#[test]
fn ethers_transactions_sign_to_the_published_bytes() {
    let cases: Vec<Value> = serde_json::from_str(ETHERS_TXS).unwrap();
    let mut signed = 0;
    for case in &cases {
        let key = case["privateKey"].as_str().unwrap();
        for (unsigned, expected) in [
            ("unsignedEip155", "signedEip155"),
            ("unsignedBerlin", "signedBerlin"),
            ("unsignedLondon", "signedLondon"),
        ] {
            // ethers leaves the EIP-155 form empty where the chain id is 0.
            let unsigned = unhex(case[unsigned].as_str().unwrap());
            if unsigned.is_empty() {
                continue;
            }
            let expected = unhex(case[expected].as_str().unwrap());
            let k = sign::<K256>(key, tx_payload(&unsigned));
            let l = sign::<Libsecp256k1>(key, tx_payload(&unsigned));
            assert_eq!(k.signed_transaction, expected, "{}", case["name"]);
            assert_eq!(l.signed_transaction, expected, "{}", case["name"]);
            assert_eq!(
                k.transaction_hash,
                alloy_primitives::keccak256(&expected).to_vec()
            );
            signed += 1;
        }
    }
    assert_eq!(signed, 224 + 320 + 320);
}

#[test]
fn eip712_mail_example_signs_to_the_published_signature() {
    let v = &vectors()["eip712_mail_example"];
    let (digest, domain) = typed_data(&v["typed_data"].to_string()).unwrap();
    assert_eq!(digest.0.to_vec(), unhex(v["digest"].as_str().unwrap()));
    assert_eq!(
        domain,
        DomainFacts {
            name: Some("Ether Mail".into()),
            chain_id: Some(U256::from(1)),
            verifying_contract: Some(Address::repeat_byte(0xcc)),
        }
    );
    let key = v["private_key"].as_str().unwrap();
    for response in [
        sign::<K256>(
            key,
            EthPayload::TypedData(digest32(B256::from(digest.0)), domain.clone()),
        ),
        sign::<Libsecp256k1>(
            key,
            EthPayload::TypedData(digest32(B256::from(digest.0)), domain.clone()),
        ),
    ] {
        assert_eq!(response.signature, unhex(v["signature"].as_str().unwrap()));
        assert!(response.signed_transaction.is_empty());
    }
}

#[test]
fn ethers_typed_data_digests_match() {
    let cases: Vec<Value> = serde_json::from_str(ETHERS_TYPED).unwrap();
    for case in &cases {
        let request = json!({
            "types": case["types"],
            "primaryType": case["primaryType"],
            "domain": case["domain"],
            "message": case["data"],
        });
        let (digest, _) =
            typed_data(&request.to_string()).unwrap_or_else(|e| panic!("{}: {e}", case["name"]));
        assert_eq!(
            digest.0.to_vec(),
            unhex(case["digest"].as_str().unwrap()),
            "{}",
            case["name"]
        );
    }
    assert_eq!(cases.len(), 130);
}

#[test]
fn eip191_messages_sign_to_the_published_signatures() {
    let v = &vectors()["eip191_personal_sign"];
    let body = |message: Vec<u8>| {
        Operation::SignEthereum(pb::SignEthereumBody {
            key_id: KeyId::random().unwrap().to_string(),
            payload: Some(Payload::PersonalMessage(message)),
            path: Vec::new(),
        })
    };
    let cases = v["sign_cases"].as_array().unwrap();
    for case in cases {
        let message = unhex(case["message_hex"].as_str().unwrap());
        let op = sign_ethereum_op(body(message.clone())).unwrap();
        assert_eq!(
            op.payload.digest().0.to_vec(),
            unhex(case["message_hash"].as_str().unwrap())
        );
        let key = case["private_key"].as_str().unwrap();
        let k = sign::<K256>(
            key,
            sign_ethereum_op(body(message.clone())).unwrap().payload,
        );
        let l = sign::<Libsecp256k1>(key, op.payload);
        assert_eq!(
            k.signature,
            unhex(case["signature"].as_str().unwrap()),
            "{}",
            case["id"]
        );
        assert_eq!(l.signature, k.signature);
    }
    assert_eq!(cases.len(), 5);
    for case in v["hash_only_cases"].as_array().unwrap() {
        let op = sign_ethereum_op(body(unhex(case["message_hex"].as_str().unwrap()))).unwrap();
        assert_eq!(
            op.payload.digest().0.to_vec(),
            unhex(case["message_hash"].as_str().unwrap())
        );
    }
}

fn eip1559(to: Option<Address>, value: U256, input: Vec<u8>) -> Vec<u8> {
    let tx = TxEip1559 {
        chain_id: 1,
        nonce: 7,
        gas_limit: 100_000,
        max_fee_per_gas: 30_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: to.map_or(TxKind::Create, TxKind::Call),
        value,
        access_list: Default::default(),
        input: input.into(),
    };
    let mut out = Vec::new();
    tx.encode_for_signing(&mut out);
    out
}

#[test]
fn erc20_calls_are_read_only_when_exactly_encoded() {
    let token = Address::repeat_byte(0x70);
    let bob = Address::repeat_byte(0xb0);
    let transfer = erc20::transferCall {
        to: bob,
        amount: U256::from(5),
    }
    .abi_encode();
    let read = |input: Vec<u8>| {
        transaction(&eip1559(Some(token), U256::ZERO, input))
            .unwrap()
            .facts
            .call
    };
    assert_eq!(
        read(transfer.clone()),
        Call::TokenTransfer {
            selector: erc20::transferCall::SELECTOR,
            recipient: bob,
            amount: U256::from(5)
        }
    );
    let approve = erc20::approveCall {
        spender: bob,
        amount: U256::MAX,
    }
    .abi_encode();
    assert_eq!(
        read(approve),
        Call::TokenApprove {
            selector: erc20::approveCall::SELECTOR,
            spender: bob,
            amount: U256::MAX
        }
    );
    let from = erc20::transferFromCall {
        from: Address::repeat_byte(1),
        to: bob,
        amount: U256::from(9),
    }
    .abi_encode();
    assert!(matches!(read(from), Call::TokenTransfer { recipient, .. } if recipient == bob));
    // A trailing byte, or dirty high bits in the address word, makes it an unknown call.
    let mut trailing = transfer.clone();
    trailing.push(0);
    assert_eq!(
        read(trailing),
        Call::Other(Some(erc20::transferCall::SELECTOR))
    );
    let mut dirty = transfer;
    dirty[4] = 1;
    assert_eq!(
        read(dirty),
        Call::Other(Some(erc20::transferCall::SELECTOR))
    );
    assert_eq!(read(vec![0xa9, 0x05]), Call::Other(None));
    let created = transaction(&eip1559(None, U256::from(1), vec![0x60])).unwrap();
    assert_eq!(created.facts.to, None);
}

#[test]
fn malformed_transactions_are_refused() {
    let good = eip1559(Some(Address::repeat_byte(1)), U256::from(1), Vec::new());
    assert!(transaction(&good).is_ok());
    invalid(transaction(&[]));
    invalid(transaction(&good[..good.len() - 1]));
    let mut trailing = good.clone();
    trailing.push(0x80);
    assert_eq!(
        invalid(transaction(&trailing)),
        "bytes after the transaction"
    );
    for kind in [0x00, 0x03, 0x05, 0x7f] {
        let mut other = good.clone();
        other[0] = kind;
        invalid(transaction(&other));
    }
    let huge = eip1559(
        Some(Address::repeat_byte(1)),
        U256::ZERO,
        vec![0; MAX_TRANSACTION],
    );
    assert_eq!(
        invalid(transaction(&huge)),
        "transaction longer than 32 KiB"
    );
    // A pre-EIP-155 legacy transaction (replayable on every chain).
    let legacy = TxLegacy {
        chain_id: None,
        nonce: 1,
        gas_price: 1,
        gas_limit: 21_000,
        to: TxKind::Call(Address::repeat_byte(1)),
        value: U256::from(1),
        input: Default::default(),
    };
    let mut bytes = Vec::new();
    legacy.encode_for_signing(&mut bytes);
    assert_eq!(
        invalid(transaction(&bytes)),
        "legacy transaction without EIP-155 chain id"
    );
}

#[test]
fn non_canonical_encodings_are_refused() {
    let v = &vectors()["eip155_example"];
    let unsigned = unhex(v["signing_data"].as_str().unwrap());
    // EIP-155's placeholders must be empty: `…01 80 80` with a non-zero `r` placeholder.
    let mut placeholder = unsigned.clone();
    let n = placeholder.len();
    placeholder[n - 2] = 0x01;
    assert!(transaction(&placeholder).is_err());
    // The nonce 9 written as a one-byte string (0x81 0x09) instead of the byte itself.
    let mut long_nonce = vec![0xed];
    long_nonce.extend_from_slice(&[0x81, 0x09]);
    long_nonce.extend_from_slice(&unsigned[2..]);
    assert!(transaction(&long_nonce).is_err());
    // A list header in long form for a short list.
    let mut long_header = vec![0xf8, 0x2c];
    long_header.extend_from_slice(&unsigned[1..]);
    assert!(transaction(&long_header).is_err());
}

fn mail(mutate: impl FnOnce(&mut Value)) -> String {
    let mut v = vectors()["eip712_mail_example"]["typed_data"].clone();
    mutate(&mut v);
    v.to_string()
}

#[test]
fn malformed_typed_data_is_refused() {
    assert!(typed_data(&mail(|_| {})).is_ok());
    invalid(typed_data("not json"));
    invalid(typed_data(&mail(|v| {
        v.as_object_mut().unwrap().remove("types");
    })));
    // A value that does not match its declared type.
    invalid(typed_data(&mail(|v| {
        v["message"]["from"]["wallet"] = json!("not an address");
    })));
    // A primary type that is not declared.
    invalid(typed_data(&mail(|v| v["primaryType"] = json!("Letter"))));
    // A type that contains itself.
    let err = invalid(typed_data(&mail(|v| {
        v["types"]["Person"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "self", "type": "Person"}));
    })));
    assert_ne!(err, "typed data nested too deeply");
    // Mutually recursive types.
    invalid(typed_data(&mail(|v| {
        v["types"]["Person"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "mail", "type": "Mail"}));
    })));
    let big = "x".repeat(MAX_TYPED_DATA);
    assert_eq!(
        invalid(typed_data(&mail(|v| v["message"]["contents"] = json!(big)))),
        "typed data longer than 32 KiB"
    );
    let mut deep = json!(1);
    for _ in 0..MAX_JSON_DEPTH {
        deep = json!([deep]);
    }
    assert_eq!(
        invalid(typed_data(&mail(|v| v["message"]["extra"] = deep))),
        "typed data nested too deeply"
    );
    let many = mail(|v| {
        for i in 0..MAX_TYPES {
            v["types"][format!("T{i}")] = json!([{"name": "a", "type": "uint8"}]);
        }
    });
    assert_eq!(
        invalid(typed_data(&many)),
        "typed data declares too many types"
    );
}

#[test]
fn bodies_name_one_payload_and_a_key() {
    let op = |key_id: String, payload| {
        sign_ethereum_op(Operation::SignEthereum(pb::SignEthereumBody {
            key_id,
            payload,
            path: Vec::new(),
        }))
    };
    let key = KeyId::random().unwrap().to_string();
    assert_eq!(
        invalid(op(key.clone(), None)),
        "sign_ethereum names no payload"
    );
    invalid(op(
        "nope".into(),
        Some(Payload::PersonalMessage(b"hi".to_vec())),
    ));
    assert_eq!(
        invalid(op(
            key.clone(),
            Some(Payload::PersonalMessage(vec![0; MAX_MESSAGE + 1]))
        )),
        "personal message longer than 16 KiB"
    );
    assert!(op(key, Some(Payload::PersonalMessage(vec![0; MAX_MESSAGE]))).is_ok());
    invalid(sign_ethereum_op(Operation::Sign(pb::SignBody::default())));
}
