//! Vault lifecycle, reload, and refusal of tampered or swapped records.

use std::sync::Arc;

use super::*;
use crate::backend::K256;
use crate::config::Capacity;
use crate::policy::KeyringAdmins;
use crate::provider::local::LocalProvider;
use crate::replay::ReplayGuard;
use crate::testing::{admins, api, authorized, guard, policy, stored};

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

async fn ready_vault(env: &Env, guard: &ReplayGuard) -> (Vault<K256>, KeyringId, NewKeyring) {
    let vault = Vault::<K256>::default();
    vault.finish_loading().unwrap();
    let (created, _) = vault
        .create_keyring(env.provider.as_ref(), admins(), authorized(guard))
        .await
        .unwrap();
    (vault, created.id, created)
}

fn create(vault: &Vault<K256>, guard: &ReplayGuard, keyring: KeyringId, approver: u8) -> Changed {
    vault
        .create_key(keyring, "", policy(approver), authorized(guard))
        .unwrap()
}

fn sign_ecdsa(
    vault: &Vault<K256>,
    guard: &ReplayGuard,
    id: &KeyId,
) -> Result<crate::backend::EcdsaSignature, Error> {
    let digest = crate::backend::Digest32([5; 32]);
    vault
        .sign(
            id,
            &HdPath::root(),
            |_| Ok(authorized(guard)),
            |k| K256::sign_ecdsa(k, &digest),
        )
        .map(|(signature, _)| signature)
}

#[tokio::test]
async fn refuses_to_sign_or_create_until_ready_and_spends_nothing_when_refusing() {
    let env = env();
    let guard = guard();
    let vault = Vault::<K256>::default();
    assert_eq!(vault.phase(), Phase::AwaitingKeyrings);
    // Keyring creation waits for ready too: a refusal while loading is retryable.
    assert!(matches!(
        vault
            .create_keyring(env.provider.as_ref(), admins(), authorized(&guard))
            .await,
        Err(Error::NotReady)
    ));
    let ring = KeyringId::random().unwrap();
    assert!(matches!(
        vault.create_key(ring, "", policy(2), authorized(&guard)),
        Err(Error::NotReady)
    ));
    assert!(matches!(
        sign_ecdsa(&vault, &guard, &KeyId::random().unwrap()),
        Err(Error::NotReady)
    ));
    assert!(
        guard.is_empty(),
        "every refused authorisation released its nonce"
    );
    vault.finish_loading().unwrap();
    let (created, _) = vault
        .create_keyring(env.provider.as_ref(), admins(), authorized(&guard))
        .await
        .unwrap();
    assert!(matches!(
        vault.create_key(ring, "", policy(2), authorized(&guard)),
        Err(Error::KeyringNotFound)
    ));
    let key = create(&vault, &guard, created.id, 2);
    sign_ecdsa(&vault, &guard, &key.record.key_id).unwrap();
    assert_eq!(
        guard.len(),
        3,
        "keyring, key and signature spent their nonces"
    );
    // Loading is over: the boot load is refused; a ready vault takes only records that open
    // under its keyrings and only moves policies forward (`sync_key`), and a keyring loaded
    // again is the same keyring.
    assert!(matches!(vault.finish_loading(), Err(Error::WrongPhase)));
    assert!(matches!(
        vault.load_key(&key.record),
        Err(Error::WrongPhase)
    ));
    vault
        .load_keyring(env.provider.as_ref(), &stored(&created))
        .await
        .unwrap();
    assert_eq!(vault.counts().0, 1);
}

#[tokio::test]
async fn capacities_are_enforced_without_spending_the_nonce() {
    let env = env();
    let guard = guard();
    let capacity = Capacity {
        keyrings: 1,
        keys: 2,
        policies: 1,
        derived_keys: 16,
    };
    let vault = Vault::<K256>::new(capacity);
    vault.finish_loading().unwrap();
    let (ring, _) = vault
        .create_keyring(env.provider.as_ref(), admins(), authorized(&guard))
        .await
        .unwrap();
    assert!(matches!(
        vault
            .create_keyring(env.provider.as_ref(), admins(), authorized(&guard))
            .await,
        Err(Error::Capacity(_))
    ));
    // Two keys under one policy hold one policy entry.
    let first = create(&vault, &guard, ring.id, 2);
    create(&vault, &guard, ring.id, 2);
    let spent = guard.len();
    assert!(matches!(
        vault.create_key(ring.id, "", policy(2), authorized(&guard)),
        Err(Error::Capacity("key capacity reached"))
    ));
    // A change needs a second entry while the other key still uses the first: refused.
    let hash = first.policy.hash;
    assert!(matches!(
        vault.update_policy(&first.record.key_id, &hash, policy(3), |_| Ok(authorized(
            &guard
        ))),
        Err(Error::Capacity("policy capacity reached"))
    ));
    assert_eq!(guard.len(), spent, "refusals spent nothing");
}

#[tokio::test]
async fn a_superseded_policy_gives_its_place_back() {
    let env = env();
    let guard = guard();
    let vault = Vault::<K256>::new(Capacity {
        policies: 1,
        ..Capacity::default()
    });
    vault.finish_loading().unwrap();
    let (ring, _) = vault
        .create_keyring(env.provider.as_ref(), admins(), authorized(&guard))
        .await
        .unwrap();
    let key = create(&vault, &guard, ring.id, 2);
    // One key changing its policy over and over never needs more than its own entry.
    for to in [3, 4, 2, 3] {
        let hash = vault.policy(&key.record.key_id).unwrap().hash;
        vault
            .update_policy(&key.record.key_id, &hash, policy(to), |_| {
                Ok(authorized(&guard))
            })
            .unwrap();
    }
    assert_eq!(vault.policy(&key.record.key_id).unwrap().policy.version, 5);
    // The table is full with the key's current policy; a new key under another is refused.
    assert!(matches!(
        vault.create_key(ring.id, "", policy(9), authorized(&guard)),
        Err(Error::Capacity("policy capacity reached"))
    ));
}

#[tokio::test]
async fn reload_gives_the_same_keys_and_refuses_tampered_and_swapped_records() {
    let env = env();
    let guard = guard();
    let (vault, keyring, created) = ready_vault(&env, &guard).await;
    let (a, b, c) = (
        create(&vault, &guard, keyring, 2),
        create(&vault, &guard, keyring, 2),
        create(&vault, &guard, keyring, 2),
    );
    let (pub_a, pub_c) = (a.public, c.public);
    let sig_a = sign_ecdsa(&vault, &guard, &a.record.key_id).unwrap();
    let (a, b, c) = (a.record, b.record, c.record);

    // A fresh enclave after a restart.
    let fresh = Vault::<K256>::default();
    fresh
        .load_keyring(env.provider.as_ref(), &stored(&created))
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
    assert_eq!(fresh.identity(&a.key_id).unwrap().public, pub_a);
    assert_eq!(fresh.identity(&c.key_id).unwrap().public, pub_c);
    assert_eq!(sign_ecdsa(&fresh, &guard, &a.key_id).unwrap(), sig_a);
    assert!(matches!(
        sign_ecdsa(&fresh, &guard, &b.key_id),
        Err(Error::KeyNotFound)
    ));
}

#[tokio::test]
async fn a_wrapped_keyring_does_not_open_under_another_id() {
    let env = env();
    let guard = guard();
    let (_, id, created) = ready_vault(&env, &guard).await;
    let fresh = Vault::<K256>::default();
    let other = KeyringId::random().unwrap();
    let load = |id, admins: Vec<u8>| {
        let (fresh, env) = (&fresh, &env);
        let stored = crate::intake::host::StoredKeyring {
            id,
            admins,
            ..stored(&created)
        };
        async move { fresh.load_keyring(env.provider.as_ref(), &stored).await }
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

/// The per-key memory budget (bench/RESULTS.md): a vault holds millions of these. A key
/// waiting for its check holds its secret and claimed public key in a separate allocation,
/// freed by the check.
#[test]
fn loaded_keys_stay_small() {
    assert!(
        size_of::<LoadedKey<K256>>() <= 128,
        "{}",
        size_of::<LoadedKey<K256>>()
    );
    assert!(size_of::<LoadedKey<crate::backend::Libsecp256k1>>() <= 136);
}

/// Keys loaded from records are checked before their first use, or by the background pass;
/// keys made here count as checked. The count tells which.
#[tokio::test]
async fn loaded_keys_are_checked_on_first_use_or_by_the_pass() {
    let env = env();
    let guard = guard();
    let (first, keyring, created) = ready_vault(&env, &guard).await;
    let records: Vec<_> = (0..5)
        .map(|i| create(&first, &guard, keyring, i).record)
        .collect();
    assert_eq!(first.checked_keys(), 5, "made here: checked");

    let second = Vault::<K256>::default();
    second
        .load_keyring(env.provider.as_ref(), &stored(&created))
        .await
        .unwrap();
    for record in &records {
        second.load_key(record).unwrap().unwrap();
    }
    second.finish_loading().unwrap();
    assert_eq!(second.checked_keys(), 0, "the load itself checks nothing");
    let signature = sign_ecdsa(&second, &guard, &records[0].key_id).unwrap();
    assert_eq!(
        signature,
        sign_ecdsa(&first, &guard, &records[0].key_id).unwrap()
    );
    assert_eq!(second.checked_keys(), 1, "checked at its first use");
    assert_eq!(second.check_pending(2).unwrap(), 4);
    assert_eq!(second.check_pending(2).unwrap(), 0);
    assert_eq!(second.checked_keys(), 5);
}

/// A record the seal authenticates but whose public key is not its secret's can only come from
/// a broken enclave: the vault loads it (the check is deferred), and fails closed at the key's
/// first use, or when the background pass reaches it, whichever comes first.
#[tokio::test]
async fn a_record_whose_public_key_is_not_its_secrets_fails_the_vault_closed() {
    for first_use in [true, false] {
        let env = env();
        let guard = guard();
        let (first, keyring, created) = ready_vault(&env, &guard).await;
        let honest = create(&first, &guard, keyring, 1).record;
        let mut broken = create(&first, &guard, keyring, 2).record;
        broken.public_key = honest.public_key;
        let secret = WalletSecret::random().unwrap();
        let policy_hash = seal::policy_hash(&broken.policy);
        broken.sealed = seal::seal(
            &read(&first.keyrings).get(&keyring).unwrap().key,
            &Binding {
                key_id: &broken.key_id,
                keyring_id: &keyring,
                public_key: &broken.public_key,
                policy_hash: &policy_hash,
            },
            &secret,
        )
        .unwrap();

        let second = Vault::<K256>::default();
        second
            .load_keyring(env.provider.as_ref(), &stored(&created))
            .await
            .unwrap();
        second.load_key(&honest).unwrap().unwrap();
        second.load_key(&broken).unwrap().unwrap();
        second.finish_loading().unwrap();
        if first_use {
            assert!(matches!(
                sign_ecdsa(&second, &guard, &broken.key_id),
                Err(Error::Unrecoverable)
            ));
        } else {
            assert!(matches!(second.check_pending(2), Err(Error::Unrecoverable)));
        }
        assert_eq!(second.phase(), Phase::Unrecoverable);
        assert!(matches!(
            sign_ecdsa(&second, &guard, &honest.key_id),
            Err(Error::Unrecoverable)
        ));
    }
}

#[tokio::test]
async fn identity_reports_keyring_and_policy() {
    let env = env();
    let guard = guard();
    let (vault, keyring, _) = ready_vault(&env, &guard).await;
    let created = create(&vault, &guard, keyring, 2);
    let identity = vault.identity(&created.record.key_id).unwrap();
    assert_eq!(
        (identity.public, identity.keyring_id, identity.policy.hash),
        (
            created.public,
            keyring,
            seal::policy_hash(&created.record.policy)
        )
    );
    assert_eq!(identity.policy.policy.version, 1);
}

#[tokio::test]
async fn policy_change_reseals_and_only_applies_to_the_named_policy() {
    let env = env();
    let guard = guard();
    let (vault, keyring, created) = ready_vault(&env, &guard).await;
    let first = create(&vault, &guard, keyring, 2);
    let (public, first) = (first.public, first.record);
    let first_hash = seal::policy_hash(&first.policy);
    let refused = vault.update_policy(&first.key_id, &first_hash, policy(3), |_| {
        Err(Error::Denied("no quorum"))
    });
    assert!(matches!(refused, Err(Error::Denied(_))));
    let second = vault
        .update_policy(&first.key_id, &first_hash, policy(3), |current| {
            assert_eq!(current.policy.version, 1);
            Ok(authorized(&guard))
        })
        .unwrap()
        .record;
    assert_eq!(vault.policy(&first.key_id).unwrap().policy.version, 2);
    assert_eq!(second.public_key, first.public_key);
    // Replaying the same change (naming the old policy) is refused.
    assert!(matches!(
        vault.update_policy(&first.key_id, &first_hash, policy(4), |_| Ok(authorized(
            &guard
        ))),
        Err(Error::Denied(_))
    ));
    // The new record loads after a restart and carries the new policy; the old one still
    // opens (rollback across restarts is the documented limit, see SPEC.md).
    let fresh = Vault::<K256>::default();
    fresh
        .load_keyring(env.provider.as_ref(), &stored(&created))
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

/// Signing decides against the policy current under the signing lookup: `authorize` sees the
/// policy an `UpdatePolicy` just installed, never the one the caller looked at before.
#[tokio::test]
async fn signing_checks_the_policy_in_force_at_the_signature() {
    let env = env();
    let guard = guard();
    let (vault, keyring, _) = ready_vault(&env, &guard).await;
    let key = create(&vault, &guard, keyring, 2);
    let id = key.record.key_id;
    let snapshot = vault.policy(&id).unwrap();
    vault
        .update_policy(&id, &snapshot.hash, policy(3), |_| Ok(authorized(&guard)))
        .unwrap();
    let approver_2 = {
        let k = api(2);
        crate::stamp::ApiKeyId::parse(k.scheme, &k.public_key)
            .unwrap()
            .0
    };
    assert!(snapshot.policy.approvers.has_member(&approver_2));
    let digest = crate::backend::Digest32([5; 32]);
    let refused = vault.sign(
        &id,
        &HdPath::root(),
        |current| {
            if current.policy.approvers.has_member(&approver_2) {
                Ok(authorized(&guard))
            } else {
                Err(Error::Denied("approver removed"))
            }
        },
        |k| K256::sign_ecdsa(k, &digest),
    );
    assert!(matches!(refused, Err(Error::Denied("approver removed"))));
}
