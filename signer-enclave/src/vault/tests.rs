//! Vault lifecycle, reload, and refusal of tampered or swapped records.

use std::sync::Arc;

use super::*;
use crate::backend::K256;
use crate::provider::local::LocalProvider;

struct Env {
    _dir: tempfile::TempDir,
    provider: Arc<LocalProvider>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(LocalProvider::open(&dir.path().join("master.key"), true).unwrap());
    Env {
        _dir: dir,
        provider,
    }
}

fn api(seed: u8) -> signer_proto::pb::ApiKey {
    signer_proto::pb::ApiKey {
        scheme: signer_proto::pb::StampScheme::Ed25519.into(),
        public_key: ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes()
            .to_vec(),
    }
}

fn admins() -> KeyringAdmins {
    KeyringAdmins::parse(&signer_proto::pb::KeyringAdmins {
        admins: vec![api(1)],
        threshold: 1,
    })
    .unwrap()
}

fn policy(approver: u8) -> KeyPolicy {
    KeyPolicy::parse(&signer_proto::pb::Policy {
        approvers: vec![api(approver)],
        threshold: 1,
        schemes: vec![1, 2],
        admins: vec![api(1)],
        admin_threshold: 1,
        ..Default::default()
    })
    .unwrap()
}

async fn ready_vault(env: &Env) -> (Vault<K256>, KeyringId, NewKeyring) {
    let vault = Vault::<K256>::default();
    let created = vault
        .create_keyring(env.provider.as_ref(), admins())
        .await
        .unwrap();
    vault.finish_loading().unwrap();
    (vault, created.id, created)
}

#[tokio::test]
async fn refuses_to_sign_until_ready() {
    let env = env();
    let vault = Vault::<K256>::default();
    assert_eq!(vault.phase(), Phase::AwaitingKeyrings);
    let ring = vault
        .create_keyring(env.provider.as_ref(), admins())
        .await
        .unwrap()
        .id;
    assert!(matches!(
        vault.create_key(ring, "", policy(2)),
        Err(Error::NotReady)
    ));
    assert!(matches!(
        vault.with_key(&KeyId::random().unwrap(), |_| ()),
        Err(Error::NotReady)
    ));
    vault.finish_loading().unwrap();
    assert!(vault.create_key(ring, "", policy(2)).is_ok());
    // Loading is over: the host cannot inject records or keyrings into a ready enclave.
    assert!(matches!(vault.finish_loading(), Err(Error::WrongPhase)));
}

#[tokio::test]
async fn reload_gives_the_same_keys_and_refuses_tampered_and_swapped_records() {
    let env = env();
    let (vault, keyring, created) = ready_vault(&env).await;
    let (a, pub_a) = vault.create_key(keyring, "a", policy(2)).unwrap();
    let (b, _) = vault.create_key(keyring, "b", policy(2)).unwrap();
    let (c, pub_c) = vault.create_key(keyring, "c", policy(2)).unwrap();
    let digest = crate::backend::Digest32([5; 32]);
    let sig_a = vault
        .with_key(&a.key_id, |k| K256::sign_ecdsa(&k.key, &digest))
        .unwrap();

    // A fresh enclave after a restart.
    let fresh = Vault::<K256>::default();
    fresh
        .load_keyring(
            env.provider.as_ref(),
            keyring,
            &created.wrapped,
            &created.admins,
            &created.admins_seal,
        )
        .await
        .unwrap();
    let mut tampered = SealedRecord {
        sealed: b.sealed.clone(),
        ..clone_record(&b)
    };
    tampered.sealed[20] ^= 1;
    // a's sealed bytes presented under c's id: a swap.
    let swapped = SealedRecord {
        sealed: a.sealed.clone(),
        ..clone_record(&c)
    };
    assert_eq!(
        fresh.load_key(&tampered).unwrap(),
        Err(Rejection::SealCheckFailed)
    );
    assert_eq!(
        fresh.load_key(&swapped).unwrap(),
        Err(Rejection::SealCheckFailed)
    );
    let foreign = SealedRecord {
        keyring_id: KeyringId::random().unwrap(),
        ..clone_record(&a)
    };
    assert_eq!(
        fresh.load_key(&foreign).unwrap(),
        Err(Rejection::UnknownKeyring)
    );
    let relabelled_policy = SealedRecord {
        policy: b"allow everything".to_vec(),
        ..clone_record(&a)
    };
    assert_eq!(
        fresh.load_key(&relabelled_policy).unwrap(),
        Err(Rejection::SealCheckFailed)
    );
    // b's (valid, differently sealed) policy presented with a's record: a policy swap.
    let other_policy = policy(3).encode();
    let swapped_policy = SealedRecord {
        policy: other_policy,
        ..clone_record(&a)
    };
    assert_eq!(
        fresh.load_key(&swapped_policy).unwrap(),
        Err(Rejection::SealCheckFailed)
    );
    assert_eq!(fresh.load_key(&a).unwrap(), Ok(()));
    assert_eq!(fresh.load_key(&a).unwrap(), Err(Rejection::Duplicate));
    assert_eq!(fresh.load_key(&c).unwrap(), Ok(()));
    fresh.finish_loading().unwrap();

    assert_eq!(fresh.counts(), (1, 2));
    assert_eq!(
        fresh
            .with_key(&a.key_id, |k| K256::public_key(&k.key))
            .unwrap(),
        pub_a
    );
    assert_eq!(
        fresh
            .with_key(&c.key_id, |k| K256::public_key(&k.key))
            .unwrap(),
        pub_c
    );
    assert_eq!(
        fresh
            .with_key(&a.key_id, |k| K256::sign_ecdsa(&k.key, &digest))
            .unwrap(),
        sig_a
    );
    assert!(matches!(
        fresh.with_key(&b.key_id, |_| ()),
        Err(Error::KeyNotFound)
    ));
}

#[tokio::test]
async fn a_wrapped_keyring_does_not_open_under_another_id() {
    let env = env();
    let (_, id, created) = ready_vault(&env).await;
    let fresh = Vault::<K256>::default();
    let other = KeyringId::random().unwrap();
    let load = |id, admins: Vec<u8>| {
        let (fresh, env, created) = (&fresh, &env, &created);
        async move {
            fresh
                .load_keyring(
                    env.provider.as_ref(),
                    id,
                    &created.wrapped,
                    &admins,
                    &created.admins_seal,
                )
                .await
        }
    };
    assert!(matches!(
        load(other, created.admins.clone()).await,
        Err(Error::SealCheckFailed)
    ));
    // Another admin set (the host's own keys, say) does not match the keyring's seal.
    let hostile = KeyringAdmins::parse(&signer_proto::pb::KeyringAdmins {
        admins: vec![api(66)],
        threshold: 1,
    })
    .unwrap();
    assert!(matches!(
        load(id, hostile.encode()).await,
        Err(Error::SealCheckFailed)
    ));
    load(id, created.admins.clone()).await.unwrap();
}

fn clone_record(r: &SealedRecord) -> SealedRecord {
    SealedRecord {
        key_id: r.key_id,
        keyring_id: r.keyring_id,
        public_key: r.public_key,
        policy: r.policy.clone(),
        label: r.label.clone(),
        sealed: r.sealed.clone(),
    }
}

/// The per-key memory budget (bench/RESULTS.md): a vault holds millions of these.
#[test]
fn loaded_keys_stay_small() {
    assert!(
        size_of::<LoadedKey<K256>>() <= 96,
        "{}",
        size_of::<LoadedKey<K256>>()
    );
    assert!(size_of::<LoadedKey<crate::backend::Libsecp256k1>>() <= 104);
}

#[tokio::test]
async fn identity_reports_keyring_and_policy() {
    let env = env();
    let (vault, keyring, _) = ready_vault(&env).await;
    let (record, public) = vault.create_key(keyring, "x", policy(2)).unwrap();
    let identity = vault.identity(&record.key_id).unwrap();
    assert_eq!(
        (identity.public, identity.keyring_id, identity.policy.hash),
        (public, keyring, seal::policy_hash(&record.policy))
    );
    assert_eq!(identity.policy.policy.version, 1);
}

#[tokio::test]
async fn policy_change_reseals_and_only_applies_to_the_named_policy() {
    let env = env();
    let (vault, keyring, created) = ready_vault(&env).await;
    let (first, public) = vault.create_key(keyring, "x", policy(2)).unwrap();
    let first_hash = seal::policy_hash(&first.policy);
    let refused = vault.update_policy(&first.key_id, &first_hash, policy(3), |_| {
        Err(Error::Denied("no quorum"))
    });
    assert!(matches!(refused, Err(Error::Denied(_))));
    let (second, _) = vault
        .update_policy(&first.key_id, &first_hash, policy(3), |current| {
            assert_eq!(current.version, 1);
            Ok(())
        })
        .unwrap();
    assert_eq!(vault.policy(&first.key_id).unwrap().policy.version, 2);
    assert_eq!(second.public_key, first.public_key);
    // Replaying the same change (naming the old policy) is refused.
    assert!(matches!(
        vault.update_policy(&first.key_id, &first_hash, policy(4), |_| Ok(())),
        Err(Error::Denied(_))
    ));
    // The new record loads after a restart and carries the new policy; the old one still
    // opens (rollback across restarts is the documented limit, see SPEC.md).
    let fresh = Vault::<K256>::default();
    fresh
        .load_keyring(
            env.provider.as_ref(),
            keyring,
            &created.wrapped,
            &created.admins,
            &created.admins_seal,
        )
        .await
        .unwrap();
    assert_eq!(fresh.load_key(&second).unwrap(), Ok(()));
    fresh.finish_loading().unwrap();
    let identity = fresh.identity(&second.key_id).unwrap();
    assert_eq!(identity.public, public);
    assert_eq!(identity.policy.policy.version, 2);
    assert_eq!(identity.policy.policy, {
        let mut p = policy(3);
        p.version = 2;
        p
    });
}
