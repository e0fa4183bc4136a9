//! Quorum arithmetic and policy validation.

use super::*;
use crate::testing::api;

fn approvals(seeds: &[u8]) -> Approvals {
    Approvals::of(seeds.iter().map(|&s| {
        let key = api(s);
        ApiKeyId::parse(key.scheme, &key.public_key).unwrap().0
    }))
}

fn two_of_three() -> pb::Policy {
    pb::Policy {
        version: 0,
        approvers: vec![api(1), api(2), api(3)],
        threshold: 2,
        schemes: vec![pb::SignatureScheme::EcdsaSecp256k1.into()],
        max_signatures_per_minute: 0,
        admins: vec![api(9)],
        admin_threshold: 1,
        ethereum: None,
        hd: None,
        bitcoin: None,
    }
}

#[test]
fn two_of_three_needs_two_distinct_approvers() {
    let policy = KeyPolicy::parse(&two_of_three()).unwrap();
    assert!(!policy.approvers.satisfied_by(&approvals(&[1])));
    assert!(
        !policy.approvers.satisfied_by(&approvals(&[1, 1])),
        "same approver twice is one"
    );
    assert!(
        !policy.approvers.satisfied_by(&approvals(&[1, 7, 8])),
        "strangers do not count"
    );
    assert!(policy.approvers.satisfied_by(&approvals(&[1, 3])));
    assert!(policy.approvers.satisfied_by(&approvals(&[3, 2, 1, 7])));
    assert!(
        !policy.admins.satisfied_by(&approvals(&[1, 2, 3])),
        "approvers are not admins"
    );
    assert!(policy.admins.satisfied_by(&approvals(&[9])));
    assert!(policy.allows(pb::SignatureScheme::EcdsaSecp256k1));
    assert!(!policy.allows(pb::SignatureScheme::Bip340Schnorr));
}

#[test]
fn encoding_round_trips_and_is_canonical() {
    let policy = KeyPolicy::parse(&two_of_three()).unwrap();
    let bytes = policy.encode();
    assert_eq!(KeyPolicy::decode(&bytes).unwrap(), policy);
    assert_eq!(KeyPolicy::decode(&bytes).unwrap().encode(), bytes);
}

#[test]
fn invalid_policies_are_refused() {
    let cases: Vec<pb::Policy> = vec![
        pb::Policy {
            threshold: 0,
            ..two_of_three()
        },
        pb::Policy {
            threshold: 4,
            ..two_of_three()
        },
        pb::Policy {
            approvers: vec![],
            threshold: 0,
            ..two_of_three()
        },
        pb::Policy {
            approvers: vec![api(1), api(1)],
            ..two_of_three()
        },
        pb::Policy {
            schemes: vec![],
            ..two_of_three()
        },
        pb::Policy {
            schemes: vec![0],
            ..two_of_three()
        },
        pb::Policy {
            schemes: vec![1, 1],
            ..two_of_three()
        },
        pb::Policy {
            admin_threshold: 0,
            ..two_of_three()
        },
        pb::Policy {
            admins: vec![],
            admin_threshold: 1,
            ..two_of_three()
        },
        pb::Policy {
            approvers: (1..=17).map(api).collect(),
            ..two_of_three()
        },
        pb::Policy {
            approvers: vec![pb::ApiKey {
                scheme: 2,
                public_key: vec![0; 31],
            }],
            threshold: 1,
            ..two_of_three()
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        assert!(KeyPolicy::parse(case).is_err(), "case {i} accepted");
    }
    let permanent = pb::Policy {
        admins: vec![],
        admin_threshold: 0,
        ..two_of_three()
    };
    let permanent = KeyPolicy::parse(&permanent).unwrap();
    assert!(
        !permanent.admins.satisfied_by(&approvals(&[1, 2, 3, 9])),
        "nobody may change it"
    );
}

#[test]
fn keyring_admins_need_a_member() {
    assert!(
        KeyringAdmins::parse(&pb::KeyringAdmins {
            admins: vec![],
            threshold: 0
        })
        .is_err()
    );
    let admins = KeyringAdmins::parse(&pb::KeyringAdmins {
        admins: vec![api(1), api(2)],
        threshold: 2,
    })
    .unwrap();
    assert!(!admins.quorum.satisfied_by(&approvals(&[2])));
    assert!(admins.quorum.satisfied_by(&approvals(&[1, 2])));
    assert_eq!(KeyringAdmins::decode(&admins.encode()).unwrap(), admins);
}

#[test]
fn everyone_means_every_member() {
    let admins = KeyringAdmins::parse(&pb::KeyringAdmins {
        admins: vec![api(1), api(2), api(3)],
        threshold: 1,
    })
    .unwrap();
    let everyone = admins.quorum.everyone();
    assert!(admins.quorum.satisfied_by(&approvals(&[2])));
    assert!(!everyone.satisfied_by(&approvals(&[1, 2])));
    assert!(!everyone.satisfied_by(&approvals(&[1, 2, 9])));
    assert!(everyone.satisfied_by(&approvals(&[3, 1, 2])));
    assert_eq!(
        everyone.approving(&approvals(&[3, 1])).count(),
        2,
        "counted in member order"
    );
}
