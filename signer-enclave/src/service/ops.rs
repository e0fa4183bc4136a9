//! The stamped operations: authenticate, authorise against the key's policy or the keyring's
//! admins, spend the nonce, act. Every refusal is an [`Error`] with its detail for the log.

use std::sync::Arc;

use signer_proto::pb;

use crate::Error;
use crate::backend::{Backend, PublicKey};
use crate::identity::Identity;
use crate::ids::KeyId;
use crate::keyinfo::key_info;
use crate::policy::KeyPolicy;
use crate::provider::KeyWrapper;
use crate::ratelimit::RateLimiter;
use crate::replay::{self, ReplayGuard};
use crate::request::{self, Authenticated, CreateOp, SignKind};
use crate::vault::{SealedRecord, Vault};

/// What every operation needs, shared with streaming tasks.
pub(super) struct Shared<B: Backend> {
    /// Keys and keyrings.
    pub(super) vault: Vault<B>,
    /// Replay window and nonces.
    pub(super) guard: ReplayGuard,
    /// Per-key rate limits.
    pub(super) limiter: RateLimiter,
    /// The enclave's identity keys.
    pub(super) identity: Identity,
}

/// A created, imported or re-policied key: its signed public identity and its sealed record.
pub(super) fn created_reply<B: Backend>(
    shared: &Shared<B>,
    (record, public): (SealedRecord, PublicKey),
    binding: &[u8],
) -> Result<pb::EnclaveCreateKeyResponse, Error> {
    let policy = shared.vault.policy(&record.key_id)?;
    let info = key_info(
        &shared.identity,
        &record.key_id,
        &record.keyring_id,
        &public,
        &policy,
        binding,
    );
    Ok(pb::EnclaveCreateKeyResponse {
        key: Some(info),
        sealed: Some(pb::SealedKey {
            key_id: record.key_id.to_string(),
            keyring_id: record.keyring_id.to_string(),
            public_key: record.public_key.to_vec(),
            policy: record.policy,
            label: record.label,
            sealed: record.sealed,
        }),
    })
}

/// Signs one stamped request.
pub(super) fn sign<B: Backend>(
    shared: &Shared<B>,
    request: &pb::SignedRequest,
) -> Result<pb::SignResponse, Error> {
    let now = replay::now_ms();
    let (auth, operation) = request::authenticate(request, &shared.guard, now)?;
    let op = request::sign_op(operation)?;
    let policy = shared.vault.policy(&op.key_id)?;
    if !policy.policy.approvers.satisfied_by(&auth.approvals) {
        return Err(Error::Denied("approver quorum not met"));
    }
    if !policy.policy.allows(op.scheme()) {
        return Err(Error::Denied("scheme not allowed by the key's policy"));
    }
    auth.spend_nonce(&shared.guard, now)?;
    shared
        .limiter
        .take(&op.key_id, policy.policy.max_per_minute, now)?;
    let vault = &shared.vault;
    let key_id = op.key_id.to_string();
    match op.kind {
        SignKind::Ecdsa(digest) => {
            let signature = vault.with_key(&op.key_id, |k| B::sign_ecdsa(&k.key, &digest))?;
            Ok(pb::SignResponse {
                key_id,
                scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
                signature: signature.rs.to_vec(),
                recovery_id: u32::from(signature.recovery_id),
            })
        }
        SignKind::Schnorr(message) => {
            let mut aux = [0u8; 32];
            getrandom::fill(&mut aux)?;
            let signature =
                vault.with_key(&op.key_id, |k| B::sign_schnorr(&k.key, &message, &aux))??;
            Ok(pb::SignResponse {
                key_id,
                scheme: pb::SignatureScheme::Bip340Schnorr.into(),
                signature: signature.to_vec(),
                recovery_id: 0,
            })
        }
    }
}

/// Checks a create or import against the keyring's admins; returns the keyring and policy.
fn authorize_new_key<B: Backend>(
    shared: &Shared<B>,
    auth: &Authenticated,
    op: CreateOp,
    now: u64,
) -> Result<(crate::ids::KeyringId, KeyPolicy, String), Error> {
    let (keyring_id, admins) = shared.vault.keyring_admins(op.keyring_id)?;
    if !admins.quorum.satisfied_by(&auth.approvals) {
        return Err(Error::Denied("keyring admin quorum not met"));
    }
    auth.spend_nonce(&shared.guard, now)?;
    let policy = op
        .policy
        .unwrap_or_else(|| KeyPolicy::default_for(&auth.approvals));
    Ok((keyring_id, policy, op.label))
}

/// Creates a key.
pub(super) fn create_key<B: Backend>(
    shared: &Shared<B>,
    request: &pb::SignedRequest,
) -> Result<pb::EnclaveCreateKeyResponse, Error> {
    let now = replay::now_ms();
    let (auth, operation) = request::authenticate(request, &shared.guard, now)?;
    let op = request::create_key_op(operation)?;
    let (keyring_id, policy, label) = authorize_new_key(shared, &auth, op, now)?;
    let created = shared.vault.create_key(keyring_id, &label, policy)?;
    tracing::info!(key_id = %created.0.key_id, keyring = %created.0.keyring_id, "key created");
    created_reply(shared, created, &auth.body_hash)
}

/// Imports a key sent HPKE-encrypted to this enclave.
pub(super) fn import_key<B: Backend>(
    shared: &Shared<B>,
    request: &pb::SignedRequest,
) -> Result<pb::EnclaveCreateKeyResponse, Error> {
    let now = replay::now_ms();
    let (auth, operation) = request::authenticate(request, &shared.guard, now)?;
    let op = request::import_key_op(operation)?;
    if op.hpke_public_key.as_slice() != shared.identity.hpke_public().as_slice() {
        // Encrypted to another boot of the enclave (or to someone else): it cannot open here.
        return Err(Error::InvalidArgument(
            "import encrypted to another enclave identity; attest again",
        ));
    }
    let (encapsulated_key, ciphertext, aad) = (op.encapsulated_key, op.ciphertext, op.aad);
    let (keyring_id, policy, label) = authorize_new_key(shared, &auth, op.create, now)?;
    let secret = shared
        .identity
        .open_import(&encapsulated_key, &ciphertext, &aad)?;
    let imported = shared
        .vault
        .import_key(keyring_id, &label, policy, &secret)?;
    drop(secret);
    tracing::info!(key_id = %imported.0.key_id, keyring = %imported.0.keyring_id, "key imported");
    created_reply(shared, imported, &auth.body_hash)
}

/// Replaces a key's policy with its admins' quorum.
pub(super) fn update_policy<B: Backend>(
    shared: &Shared<B>,
    request: &pb::SignedRequest,
) -> Result<pb::EnclaveCreateKeyResponse, Error> {
    let now = replay::now_ms();
    let (auth, operation) = request::authenticate(request, &shared.guard, now)?;
    let op = request::update_policy_op(operation)?;
    let changed =
        shared
            .vault
            .update_policy(&op.key_id, &op.current_policy_hash, op.policy, |current| {
                if !current.admins.satisfied_by(&auth.approvals) {
                    return Err(Error::Denied("policy admin quorum not met"));
                }
                auth.spend_nonce(&shared.guard, now)
            })?;
    shared.limiter.reset(&op.key_id);
    tracing::info!(key_id = %op.key_id, "policy changed");
    created_reply(shared, changed, &auth.body_hash)
}

/// Creates a keyring whose admins stamped the request.
pub(super) async fn create_keyring<B: Backend>(
    shared: &Shared<B>,
    provider: &dyn KeyWrapper,
    request: &pb::SignedRequest,
) -> Result<pb::EnclaveCreateKeyringResponse, Error> {
    let now = replay::now_ms();
    let (auth, operation) = request::authenticate(request, &shared.guard, now)?;
    let admins = request::create_keyring_op(operation)?;
    // Proof of possession: a quorum of the named admins must have stamped the request.
    if !admins.quorum.satisfied_by(&auth.approvals) {
        return Err(Error::Denied("new keyring's admin quorum did not stamp"));
    }
    auth.spend_nonce(&shared.guard, now)?;
    let created = shared.vault.create_keyring(provider, admins).await?;
    let statement = shared.identity.keyring_statement(&pb::KeyringStatement {
        keyring_id: created.id.to_string(),
        admins_hash: created.admins_hash.to_vec(),
        request_binding: auth.body_hash.to_vec(),
    });
    Ok(pb::EnclaveCreateKeyringResponse {
        keyring_id: created.id.to_string(),
        wrapped_key: created.wrapped,
        provider: provider.name().to_owned(),
        admins: created.admins,
        admins_seal: created.admins_seal,
        statement: Some(statement),
    })
}

/// A key's signed public identity, bound to the caller's challenge.
pub(super) fn public_key<B: Backend>(
    shared: &Shared<B>,
    request: &pb::GetKeyRequest,
) -> Result<pb::KeyInfo, Error> {
    if request.challenge.len() > 64 {
        return Err(Error::InvalidArgument("challenge longer than 64 bytes"));
    }
    let id = KeyId::parse(&request.key_id)?;
    let identity = shared.vault.identity(&id)?;
    Ok(key_info(
        &shared.identity,
        &id,
        &identity.keyring_id,
        &identity.public,
        &identity.policy,
        &request.challenge,
    ))
}

/// Shared state for a new enclave.
pub(super) fn shared<B: Backend>(
    guard: ReplayGuard,
    boot_id: [u8; 16],
) -> Result<Arc<Shared<B>>, Error> {
    Ok(Arc::new(Shared {
        vault: Vault::default(),
        guard,
        limiter: RateLimiter::default(),
        identity: Identity::generate(boot_id)?,
    }))
}
