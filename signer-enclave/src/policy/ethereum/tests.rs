//! Each Ethereum rule refuses what it names and passes its neighbour; malformed rules are refused
//! when the policy is set.

use alloy_primitives::{Address, U256};
use signer_proto::pb;

use super::*;
use crate::intake::ethereum::{Call, DomainFacts, TxFacts};
use crate::policy::KeyPolicy;
use crate::testing::api;

const TOKEN: Address = Address::repeat_byte(0x70);
const BOB: Address = Address::repeat_byte(0xb0);
const EVE: Address = Address::repeat_byte(0xee);
const DEX: Address = Address::repeat_byte(0xde);
const SWAP: [u8; 4] = [0x12, 0x34, 0x56, 0x78];
const TRANSFER: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
const APPROVE: [u8; 4] = [0x09, 0x5e, 0xa7, 0xb3];

fn be(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(8);
    bytes[first..].to_vec()
}

/// Rules a treasury might set: mainnet and Sepolia, value only to Bob, at most 10 wei per
/// transaction and 15 per day, one token, one swap call, a 2-of-3 tier above 5 wei and a 3-of-3
/// tier above 8.
fn rules() -> pb::EthereumRules {
    pb::EthereumRules {
        chain_ids: vec![1, 11_155_111],
        destinations: vec![BOB.to_vec()],
        max_value_wei: be(10),
        max_value_per_day_wei: be(15),
        allow_contract_creation: false,
        contract_calls: vec![pb::ContractCall {
            contract: DEX.to_vec(),
            selector: SWAP.to_vec(),
        }],
        tokens: vec![pb::TokenRule {
            contract: TOKEN.to_vec(),
            max_amount: be(1_000),
            max_amount_per_day: be(1_500),
            max_approval: be(100),
        }],
        tiers: vec![
            pb::ApprovalTier {
                above_wei: be(8),
                threshold: 3,
            },
            pb::ApprovalTier {
                above_wei: be(5),
                threshold: 2,
            },
        ],
        allow_personal_sign: false,
        typed_data_domains: vec![pb::TypedDataDomain {
            name: "Permit2".into(),
            chain_id: 1,
            verifying_contract: Vec::new(),
        }],
        allow_blind_signing: false,
    }
}

fn policy_with(rules: pb::EthereumRules, schemes: Vec<i32>) -> Result<KeyPolicy, Error> {
    KeyPolicy::parse(&pb::Policy {
        approvers: vec![api(1), api(2), api(3)],
        threshold: 1,
        schemes,
        admins: vec![api(9)],
        admin_threshold: 1,
        ethereum: Some(rules),
        ..Default::default()
    })
}

fn parsed(rules: pb::EthereumRules) -> EthereumRules {
    policy_with(rules, vec![pb::SignatureScheme::EcdsaSecp256k1.into()])
        .unwrap()
        .ethereum
        .unwrap()
}

fn rejected(mutate: impl FnOnce(&mut pb::EthereumRules)) -> &'static str {
    let mut wire = rules();
    mutate(&mut wire);
    match policy_with(wire, vec![pb::SignatureScheme::EcdsaSecp256k1.into()]) {
        Err(Error::InvalidArgument(why)) => why,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

fn refusal<T: std::fmt::Debug>(result: Result<T, Error>) -> &'static str {
    match result {
        Err(Error::Refused(rule)) => rule,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn send(value: u64, to: Address) -> TxFacts {
    TxFacts {
        chain_id: 1,
        to: Some(to),
        value: U256::from(value),
        call: Call::None,
    }
}

fn token_call(call: Call) -> TxFacts {
    TxFacts {
        chain_id: 1,
        to: Some(TOKEN),
        value: U256::ZERO,
        call,
    }
}

fn transfer(to: Address, amount: u64) -> Call {
    Call::TokenTransfer {
        selector: TRANSFER,
        recipient: to,
        amount: U256::from(amount),
    }
}

#[test]
fn well_formed_rules_survive_the_policy_encoding() {
    let policy = policy_with(rules(), vec![pb::SignatureScheme::EcdsaSecp256k1.into()]).unwrap();
    let again = KeyPolicy::decode(&policy.encode()).unwrap();
    assert_eq!(again.ethereum.as_ref().unwrap().to_proto(), rules());
    assert_eq!(again, policy);
}

#[test]
fn malformed_rules_are_refused() {
    assert_eq!(
        rejected(|r| r.chain_ids.clear()),
        "ethereum rules name no chain id"
    );
    assert_eq!(
        rejected(|r| r.chain_ids.push(0)),
        "ethereum rules: chain id 0"
    );
    assert_eq!(
        rejected(|r| r.chain_ids.push(1)),
        "ethereum rules repeat a chain id"
    );
    assert_eq!(
        rejected(|r| r.chain_ids = (1..=65).collect()),
        "ethereum rules: over 64 chain ids"
    );
    parsed(pb::EthereumRules {
        chain_ids: (1..=64).collect(),
        ..rules()
    });
    assert_eq!(
        rejected(|r| r.destinations.push(vec![0; 19])),
        "ethereum rules: destination is not 20 bytes"
    );
    assert_eq!(
        rejected(|r| r.destinations.push(BOB.to_vec())),
        "ethereum rules repeat a destination"
    );
    assert_eq!(
        rejected(|r| r.contract_calls[0].selector.pop().map(drop).unwrap()),
        "ethereum rules: selector is not 4 bytes"
    );
    assert_eq!(
        rejected(|r| r.max_value_wei = vec![0, 10]),
        "ethereum rules: malformed max value"
    );
    assert_eq!(
        rejected(|r| r.max_value_per_day_wei = vec![1; 33]),
        "ethereum rules: malformed daily limit"
    );
    parsed(pb::EthereumRules {
        max_value_per_day_wei: vec![0xff; 32],
        ..rules()
    });
    assert_eq!(
        rejected(|r| r.tokens.push(r.tokens[0].clone())),
        "ethereum rules repeat a token"
    );
    assert_eq!(
        rejected(|r| r.tokens[0].max_approval = vec![0]),
        "ethereum rules: malformed token amount"
    );
    assert_eq!(
        rejected(|r| r.typed_data_domains.push(r.typed_data_domains[0].clone())),
        "ethereum rules repeat a domain"
    );
}

#[test]
fn tiers_must_rise_above_the_base_quorum() {
    const RISING: &str =
        "ethereum rules: tiers must have distinct bounds and rising thresholds above the base";
    assert_eq!(
        rejected(|r| r.tiers[0].threshold = 4),
        "ethereum rules: tier threshold outside the approvers' count"
    );
    // The base quorum is 1 of 3: a tier of 1 raises nothing.
    assert_eq!(rejected(|r| r.tiers[1].threshold = 1), RISING);
    // A higher bound with a lower threshold.
    assert_eq!(rejected(|r| r.tiers[0].threshold = 2), RISING);
    assert_eq!(rejected(|r| r.tiers[0].above_wei = be(5)), RISING);
    parsed(pb::EthereumRules {
        tiers: Vec::new(),
        ..rules()
    });
}

#[test]
fn rules_need_an_ecdsa_key() {
    let schnorr_only = policy_with(rules(), vec![pb::SignatureScheme::Bip340Schnorr.into()]);
    assert!(matches!(schnorr_only, Err(Error::InvalidArgument(_))));
}

#[test]
fn value_rules() {
    let rules = parsed(rules());
    assert!(rules.transaction(&send(10, BOB)).is_ok());
    assert_eq!(
        refusal(rules.transaction(&send(11, BOB))),
        "value above limit"
    );
    assert_eq!(
        refusal(rules.transaction(&send(1, EVE))),
        "destination not allowed"
    );
    let mut sepolia = send(1, BOB);
    sepolia.chain_id = 11_155_111;
    assert!(rules.transaction(&sepolia).is_ok());
    sepolia.chain_id = 5;
    assert_eq!(refusal(rules.transaction(&sepolia)), "chain not allowed");
    let create = TxFacts {
        chain_id: 1,
        to: None,
        value: U256::ZERO,
        call: Call::Other(Some(SWAP)),
    };
    assert_eq!(
        refusal(rules.transaction(&create)),
        "contract creation not allowed"
    );
    let creating = parsed(pb::EthereumRules {
        allow_contract_creation: true,
        ..self::rules()
    });
    assert!(creating.transaction(&create).is_ok());
}

#[test]
fn no_destinations_means_any_destination() {
    let open = parsed(pb::EthereumRules {
        destinations: Vec::new(),
        ..rules()
    });
    assert!(open.transaction(&send(1, EVE)).is_ok());
    assert!(open.transaction(&token_call(transfer(EVE, 1))).is_ok());
}

#[test]
fn tiers_raise_the_quorum_by_value() {
    let rules = parsed(rules());
    let tier = |value| {
        rules
            .transaction(&send(value, BOB))
            .unwrap()
            .tier
            .map(Quorum::threshold)
    };
    assert_eq!(tier(0), None);
    assert_eq!(tier(5), None);
    assert_eq!(tier(6), Some(2));
    assert_eq!(tier(8), Some(2));
    assert_eq!(tier(9), Some(3));
}

#[test]
fn value_is_counted_against_the_daily_limit() {
    let rules = parsed(rules());
    let verdict = rules.transaction(&send(7, BOB)).unwrap();
    assert_eq!(
        verdict.spends,
        vec![Spend {
            asset: Asset::Wei,
            amount: U256::from(7),
            daily_limit: U256::from(15),
        }]
    );
    assert!(
        rules
            .transaction(&token_call(Call::TokenApprove {
                selector: APPROVE,
                spender: BOB,
                amount: U256::from(1),
            }))
            .unwrap()
            .spends
            .is_empty()
    );
}

#[test]
fn token_rules() {
    let rules = parsed(rules());
    let verdict = rules
        .transaction(&token_call(transfer(BOB, 1_000)))
        .unwrap();
    assert_eq!(
        verdict.spends,
        vec![Spend {
            asset: Asset::Token(TOKEN),
            amount: U256::from(1_000),
            daily_limit: U256::from(1_500),
        }]
    );
    assert_eq!(
        refusal(rules.transaction(&token_call(transfer(BOB, 1_001)))),
        "token amount above limit"
    );
    assert_eq!(
        refusal(rules.transaction(&token_call(transfer(EVE, 1)))),
        "destination not allowed"
    );
    let approve = |spender, amount: u64| {
        token_call(Call::TokenApprove {
            selector: APPROVE,
            spender,
            amount: U256::from(amount),
        })
    };
    assert!(rules.transaction(&approve(BOB, 100)).is_ok());
    assert_eq!(
        refusal(rules.transaction(&approve(BOB, 101))),
        "approval above limit"
    );
    assert_eq!(
        refusal(rules.transaction(&approve(EVE, 1))),
        "destination not allowed"
    );
    // The same call on a contract that is not a listed token is just an unlisted call.
    let mut elsewhere = token_call(transfer(BOB, 1));
    elsewhere.to = Some(DEX);
    assert_eq!(
        refusal(rules.transaction(&elsewhere)),
        "contract call not allowed"
    );
}

#[test]
fn contract_calls_are_allowed_by_contract_and_selector() {
    let rules = parsed(rules());
    let call = |to, selector| TxFacts {
        chain_id: 1,
        to: Some(to),
        value: U256::ZERO,
        call: Call::Other(selector),
    };
    assert!(rules.transaction(&call(DEX, Some(SWAP))).is_ok());
    for (to, selector) in [(DEX, Some([0; 4])), (DEX, None), (BOB, Some(SWAP))] {
        assert_eq!(
            refusal(rules.transaction(&call(to, selector))),
            "contract call not allowed"
        );
    }
    // Value sent with an allowed call must still go to an allowed destination.
    let mut paying = call(DEX, Some(SWAP));
    paying.value = U256::from(1);
    assert_eq!(
        refusal(rules.transaction(&paying)),
        "destination not allowed"
    );
}

#[test]
fn messages_and_typed_data() {
    let rules = parsed(rules());
    assert_eq!(
        refusal(rules.personal_message()),
        "personal_sign not allowed"
    );
    let permissive = parsed(pb::EthereumRules {
        allow_personal_sign: true,
        ..self::rules()
    });
    assert!(permissive.personal_message().is_ok());
    let domain = |name: &str, chain: u64| DomainFacts {
        name: Some(name.into()),
        chain_id: Some(U256::from(chain)),
        verifying_contract: Some(DEX),
    };
    assert!(rules.typed_data(&domain("Permit2", 1)).is_ok());
    for other in [
        domain("Permit3", 1),
        domain("Permit2", 5),
        DomainFacts::default(),
    ] {
        assert_eq!(
            refusal(rules.typed_data(&other)),
            "typed data domain not allowed"
        );
    }
}

#[test]
fn rules_close_blind_signing_unless_allowed() {
    let ecdsa = pb::SignatureScheme::EcdsaSecp256k1;
    let schemes = vec![ecdsa.into(), pb::SignatureScheme::Bip340Schnorr.into()];
    let closed = policy_with(rules(), schemes.clone()).unwrap();
    assert_eq!(
        refusal(closed.check_blind(ecdsa)),
        "blind signing not allowed"
    );
    assert!(
        closed
            .check_blind(pb::SignatureScheme::Bip340Schnorr)
            .is_ok()
    );
    let open = policy_with(
        pb::EthereumRules {
            allow_blind_signing: true,
            ..rules()
        },
        schemes,
    )
    .unwrap();
    assert!(open.check_blind(ecdsa).is_ok());
}
