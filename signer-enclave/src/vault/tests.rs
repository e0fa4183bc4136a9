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

async fn ready_vault(env: &Env) -> (Vault<K256>, KeyringId, Vec<u8>) {
    let vault = Vault::<K256>::default();
    let (id, wrapped) = vault.create_keyring(env.provider.as_ref()).await.unwrap();
    vault.finish_loading().unwrap();
    (vault, id, wrapped)
}

#[tokio::test]
async fn refuses_to_sign_until_ready() {
    let env = env();
    let vault = Vault::<K256>::default();
    assert_eq!(vault.phase(), Phase::AwaitingKeyrings);
    vault.create_keyring(env.provider.as_ref()).await.unwrap();
    assert!(matches!(vault.create_key(None, ""), Err(Error::NotReady)));
    assert!(matches!(
        vault.with_key(&KeyId::random().unwrap(), |_| ()),
        Err(Error::NotReady)
    ));
    vault.finish_loading().unwrap();
    assert!(vault.create_key(None, "").is_ok());
    // Loading is over: the host cannot inject records or keyrings into a ready enclave.
    assert!(matches!(vault.finish_loading(), Err(Error::WrongPhase)));
}

#[tokio::test]
async fn reload_gives_the_same_keys_and_refuses_tampered_and_swapped_records() {
    let env = env();
    let (vault, keyring, wrapped) = ready_vault(&env).await;
    let (a, pub_a) = vault.create_key(None, "a").unwrap();
    let (b, _) = vault.create_key(None, "b").unwrap();
    let (c, pub_c) = vault.create_key(None, "c").unwrap();
    let digest = crate::backend::Digest32([5; 32]);
    let sig_a = vault
        .with_key(&a.key_id, |k| K256::sign_ecdsa(&k.key, &digest))
        .unwrap();

    // A fresh enclave after a restart.
    let fresh = Vault::<K256>::default();
    fresh
        .load_keyring(env.provider.as_ref(), keyring, &wrapped)
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
    let (_, _, wrapped) = ready_vault(&env).await;
    let fresh = Vault::<K256>::default();
    let other = KeyringId::random().unwrap();
    assert!(matches!(
        fresh
            .load_keyring(env.provider.as_ref(), other, &wrapped)
            .await,
        Err(Error::SealCheckFailed)
    ));
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
    let (record, public) = vault.create_key(None, "x").unwrap();
    let identity = vault.identity(&record.key_id).unwrap();
    assert_eq!(
        (identity.public, identity.keyring_id, identity.policy_hash),
        (public, keyring, seal::policy_hash(b""))
    );
}
