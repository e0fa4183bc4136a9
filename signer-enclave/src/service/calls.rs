//! The stamped operations. Each one: opens the request (envelope, canonical body, time rules),
//! resolves the set its operation is authorised by, verifies those stamps, authorises (quorums,
//! then the nonce is reserved), and acts through a vault method that demands the proof and
//! commits it at the point of no return. A refusal for a retryable reason (loading, rate limit,
//! KMS down) leaves the nonce unspent, so the same stamped body can be sent again.

use std::sync::Arc;

use signer_proto::pb;

use crate::Error;
use crate::audit::{self, AuditLog, Note};
use crate::auth::{Authenticated, Requirement};
use crate::backend::Backend;
use crate::config::Settings;
use crate::hd::HdPath;
use crate::identity::BootIdentity;
use crate::ids::KeyId;
use crate::intake::import::{self, Imported};
use crate::intake::stamped::{self, Received, SignKind};
use crate::keyinfo::{HdFacts, key_info};
use crate::policy::Quorum;
use crate::provider::KeyWrapper;
use crate::ratelimit::RateLimiter;
use crate::replay::{self, ReplayGuard};
use crate::spend::SpendLedger;
use crate::stamp::StampBatcher;
use crate::vault::{Changed, Vault};

/// What every operation needs, shared with streaming tasks.
pub(super) struct State<B: Backend> {
    /// Keys and keyrings.
    pub(super) vault: Vault<B>,
    /// Time rules and nonces.
    pub(super) guard: ReplayGuard,
    /// Per-key rate limits.
    pub(super) limiter: RateLimiter,
    /// Rolling daily totals for the Ethereum rules.
    pub(super) ledger: SpendLedger,
    /// The enclave's identity keys and boot.
    pub(super) identity: Arc<BootIdentity>,
    /// This boot's audit chain.
    pub(super) audit: AuditLog,
    /// The measured configuration.
    pub(super) settings: Settings,
    /// Its encoding, as attested.
    pub(super) config: Vec<u8>,
    /// Ed25519 stamps of concurrent requests, verified together.
    pub(super) stamps: StampBatcher,
}

impl<B: Backend> State<B> {
    pub(super) fn deployment(&self) -> &str {
        &self.settings.deployment_id
    }

    /// Verifies the stamps of `received` by members of `relevant`, for this deployment, through
    /// the enclave's stamp batcher.
    pub(super) async fn authenticate(
        &self,
        received: Received<'_>,
        relevant: &[&Quorum],
    ) -> Result<Authenticated, Error> {
        received
            .authenticate(self.deployment(), relevant, &self.stamps)
            .await
    }
}

/// A created, imported or re-policied key: its signed public identity and its sealed record.
fn changed_reply<B: Backend>(shared: &State<B>, changed: Changed) -> pb::EnclaveCreateKeyResponse {
    let Changed {
        record,
        public,
        policy,
        committed,
        root_fingerprint,
    } = changed;
    let info = key_info(
        &shared.identity,
        &record.key_id,
        &record.keyring_id,
        &public,
        &policy,
        &committed.body_hash,
        root_fingerprint.map(|root_fingerprint| HdFacts {
            root_fingerprint,
            ..HdFacts::default()
        }),
    );
    pb::EnclaveCreateKeyResponse {
        key: Some(info),
        sealed: Some(record.into()),
    }
}

enum Signed {
    Ecdsa(crate::backend::EcdsaSignature),
    Schnorr([u8; 64]),
}

impl Signed {
    /// The signature bytes and recovery id (0 for BIP-340).
    fn into_parts(self) -> (Vec<u8>, u32) {
        match self {
            Signed::Ecdsa(signature) => (signature.rs.to_vec(), u32::from(signature.recovery_id)),
            Signed::Schnorr(signature) => (signature.to_vec(), 0),
        }
    }
}

/// Signs one stamped request.
pub(super) async fn sign<B: Backend>(
    shared: &State<B>,
    request: &pb::SignedRequest,
) -> Result<pb::SignResponse, Error> {
    let now = replay::now_ms();
    let (received, operation) = stamped::open(request, shared.guard.rules(), now)?;
    let op = stamped::sign_op(operation)?;
    let scheme = op.scheme();
    let items = [op.kind];
    let signer = Signer {
        key_id: &op.key_id,
        path: &op.path,
        scheme,
        action: pb::AuditAction::Sign,
    };
    let signed = signer.sign(shared, received, now, &items).await?;
    let (signature, recovery_id) = signed
        .into_iter()
        .next()
        .ok_or(Error::Internal)?
        .into_parts();
    Ok(pb::SignResponse {
        key_id: op.key_id.to_string(),
        scheme: scheme.into(),
        signature,
        recovery_id,
    })
}

/// Signs a stamped batch: every payload with one key, under one authorisation.
pub(super) async fn sign_batch<B: Backend>(
    shared: &State<B>,
    request: &pb::SignedRequest,
) -> Result<pb::SignBatchResponse, Error> {
    let now = replay::now_ms();
    let (received, operation) = stamped::open(request, shared.guard.rules(), now)?;
    let op = stamped::sign_batch_op(operation)?;
    let signer = Signer {
        key_id: &op.key_id,
        path: &op.path,
        scheme: op.scheme,
        action: pb::AuditAction::SignBatch,
    };
    let signatures = signer
        .sign(shared, received, now, &op.items)
        .await?
        .into_iter()
        .map(|signed| {
            let (signature, recovery_id) = signed.into_parts();
            pb::BatchSignature {
                signature,
                recovery_id,
            }
        })
        .collect();
    Ok(pb::SignBatchResponse {
        key_id: op.key_id.to_string(),
        scheme: op.scheme.into(),
        signatures,
    })
}

/// What `Sign` and `SignBatch` share: a key (at a path), a scheme, and the audit action.
struct Signer<'o> {
    key_id: &'o KeyId,
    path: &'o HdPath,
    scheme: pb::SignatureScheme,
    action: pb::AuditAction,
}

impl Signer<'_> {
    /// Signs `items` under one authorisation: the approvers' stamps verified once, one nonce,
    /// one audit entry, and one rate-limit token per item, all taken before the first signature
    /// (all or nothing).
    async fn sign<B: Backend>(
        &self,
        shared: &State<B>,
        received: Received<'_>,
        now: u64,
        items: &[SignKind],
    ) -> Result<Vec<Signed>, Error> {
        let count = u32::try_from(items.len()).map_err(|_| Error::Internal)?;
        // The stamps worth verifying are the approvers' of the policy in force now; the
        // decision is taken again, against the policy current at signing time, under the
        // vault's lookup.
        let snapshot = shared.vault.policy(self.key_id)?;
        snapshot.policy.check_blind(self.scheme)?;
        let auth = shared
            .authenticate(received, &[&snapshot.policy.approvers])
            .await?;
        drop(snapshot);
        // Drawn before anything is spent: an RNG failure leaves the request retryable.
        let aux = items
            .iter()
            .map(|item| {
                let mut aux = [0u8; 32];
                if matches!(item, SignKind::Schnorr(_)) {
                    getrandom::fill(&mut aux)?;
                }
                Ok(aux)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let sign = || {
            shared.vault.sign(
                self.key_id,
                self.path,
                |current| {
                    current.policy.check_blind(self.scheme)?;
                    let approvers = Requirement {
                        quorum: &current.policy.approvers,
                        refusal: "approver quorum not met",
                    };
                    let note = Note::new(
                        &shared.audit,
                        self.action,
                        *self.key_id,
                        current.policy.version,
                    );
                    let authorized = auth.authorize(&[approvers], &shared.guard, now, note)?;
                    // A spent rate limit drops `authorized`, which releases the nonce.
                    shared
                        .limiter
                        .take(self.key_id, current.policy.max_per_minute, count, now)?;
                    Ok(authorized)
                },
                |key| {
                    items
                        .iter()
                        .zip(&aux)
                        .map(|(item, aux)| match item {
                            SignKind::Ecdsa(digest) => {
                                Ok(Signed::Ecdsa(B::sign_ecdsa(key, digest)))
                            }
                            SignKind::Schnorr(message) => {
                                B::sign_schnorr(key, message, aux).map(Signed::Schnorr)
                            }
                        })
                        .collect::<Result<Vec<_>, Error>>()
                },
            )
        };
        // A few signatures are signed on the async worker; more (up to 256, ≈ 10 ms) with the
        // runtime told this worker blocks (`block_in_place`), which costs a handoff.
        let (signed, _) = if items.len() <= INLINE_ITEMS {
            sign()
        } else {
            tokio::task::block_in_place(sign)
        }?;
        signed
    }
}

/// The most signatures one request signs without `block_in_place` (≈ 0.6 ms of signing).
const INLINE_ITEMS: usize = 16;

const KEYRING_ADMINS: &str = "keyring admin quorum not met";

/// Creates a key under the policy its stamped body names, with the keyring admins' quorum.
pub(super) async fn create_key<B: Backend>(
    shared: &State<B>,
    request: &pb::SignedRequest,
) -> Result<pb::EnclaveCreateKeyResponse, Error> {
    let now = replay::now_ms();
    let (received, operation) = stamped::open(request, shared.guard.rules(), now)?;
    let op = stamped::create_key_op(operation)?;
    let admins = shared.vault.keyring_admins(&op.keyring_id)?;
    let auth = shared.authenticate(received, &[&admins.quorum]).await?;
    let requirement = Requirement {
        quorum: &admins.quorum,
        refusal: KEYRING_ADMINS,
    };
    let note = Note::new(&shared.audit, pb::AuditAction::CreateKey, "", 1);
    let authorized = auth.authorize(&[requirement], &shared.guard, now, note)?;
    let created = match op.kind {
        pb::KeyKind::Secp256k1 => {
            shared
                .vault
                .create_key(op.keyring_id, &op.label, op.policy, authorized)?
        }
        pb::KeyKind::HdRoot => {
            shared
                .vault
                .create_root(op.keyring_id, &op.label, op.policy, authorized)?
        }
    };
    tracing::info!(key_id = %created.record.key_id, keyring = %created.record.keyring_id, "key created");
    Ok(changed_reply(shared, created))
}

/// Imports a key sent HPKE-encrypted to this enclave, bound to this request's keyring, policy
/// and nonce.
pub(super) async fn import_key<B: Backend>(
    shared: &State<B>,
    request: &pb::SignedRequest,
) -> Result<pb::EnclaveCreateKeyResponse, Error> {
    let now = replay::now_ms();
    let (received, operation) = stamped::open(request, shared.guard.rules(), now)?;
    let op = import::import_key_op(operation)?;
    if op.hpke_public_key.as_slice() != shared.identity.hpke_public().as_slice() {
        // Encrypted to another boot of the enclave (or to someone else): it cannot open here.
        return Err(Error::InvalidArgument(
            "import encrypted to another enclave identity; attest again",
        ));
    }
    let admins = shared.vault.keyring_admins(&op.create.keyring_id)?;
    let auth = shared.authenticate(received, &[&admins.quorum]).await?;
    let requirement = Requirement {
        quorum: &admins.quorum,
        refusal: KEYRING_ADMINS,
    };
    let note = Note::new(&shared.audit, pb::AuditAction::ImportKey, "", 1);
    let authorized = auth.authorize(&[requirement], &shared.guard, now, note)?;
    // A ciphertext lifted from another request (other keyring, policy, nonce or material) does
    // not open; the refusal drops `authorized` and so spends nothing.
    let plaintext =
        shared
            .identity
            .open_import(&op.encapsulated_key, &op.ciphertext, &op.aad(auth.nonce()))?;
    let material = op.read(&plaintext)?;
    drop(plaintext);
    let create = op.create;
    let imported = match material {
        Imported::Key(secret) => shared.vault.import_key(
            create.keyring_id,
            &create.label,
            create.policy,
            &secret,
            authorized,
        )?,
        Imported::Root(root) => shared.vault.import_root(
            create.keyring_id,
            &create.label,
            create.policy,
            &root,
            authorized,
        )?,
    };
    tracing::info!(key_id = %imported.record.key_id, keyring = %imported.record.keyring_id, "key imported");
    Ok(changed_reply(shared, imported))
}

/// Replaces a key's policy with the admin quorum of the policy current at the change.
pub(super) async fn update_policy<B: Backend>(
    shared: &State<B>,
    request: &pb::SignedRequest,
) -> Result<pb::EnclaveCreateKeyResponse, Error> {
    let now = replay::now_ms();
    let (received, operation) = stamped::open(request, shared.guard.rules(), now)?;
    let op = stamped::update_policy_op(operation)?;
    let snapshot = shared.vault.policy(&op.key_id)?;
    let auth = shared
        .authenticate(received, &[&snapshot.policy.admins])
        .await?;
    drop(snapshot);
    let changed =
        shared
            .vault
            .update_policy(&op.key_id, &op.current_policy_hash, op.policy, |current| {
                let admins = Requirement {
                    quorum: &current.policy.admins,
                    refusal: "policy admin quorum not met",
                };
                let note = Note::new(
                    &shared.audit,
                    pb::AuditAction::UpdatePolicy,
                    op.key_id,
                    current.policy.version.saturating_add(1),
                );
                auth.authorize(&[admins], &shared.guard, now, note)
            })?;
    shared.limiter.reset(&op.key_id);
    tracing::info!(key_id = %op.key_id, version = changed.policy.policy.version, "policy changed");
    Ok(changed_reply(shared, changed))
}

/// Creates a keyring: stamped by a quorum of the configured creators and by every admin it
/// names.
pub(super) async fn create_keyring<B: Backend>(
    shared: &State<B>,
    provider: &dyn KeyWrapper,
    request: &pb::SignedRequest,
) -> Result<pb::EnclaveCreateKeyringResponse, Error> {
    let now = replay::now_ms();
    let (received, operation) = stamped::open(request, shared.guard.rules(), now)?;
    let admins = stamped::create_keyring_op(operation)?;
    let creators = &shared.settings.creators;
    if creators.members().is_empty() {
        return Err(Error::Denied(
            "keyring creation is disabled: no creators configured",
        ));
    }
    shared.vault.ready()?;
    let everyone = admins.quorum.everyone();
    let auth = shared
        .authenticate(received, &[creators, &admins.quorum])
        .await?;
    let requirements = [
        Requirement {
            quorum: creators,
            refusal: "keyring creator quorum not met",
        },
        // Proof of possession and consent: nobody is made an admin without stamping.
        Requirement {
            quorum: &everyone,
            refusal: "a named keyring admin did not stamp",
        },
    ];
    let note = Note::new(&shared.audit, pb::AuditAction::CreateKeyring, "", 0);
    let authorized = auth.authorize(&requirements, &shared.guard, now, note)?;
    let (created, committed) = shared
        .vault
        .create_keyring(provider, admins, authorized)
        .await?;
    let statement = shared.identity.keyring_statement(&pb::KeyringStatement {
        keyring_id: created.id.to_string(),
        admins_hash: created.admins_hash.to_vec(),
        request_binding: committed.body_hash.to_vec(),
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
    shared: &State<B>,
    request: &pb::GetKeyRequest,
) -> Result<pb::KeyInfo, Error> {
    let (id, path, challenge) = crate::intake::host::key_request(request)?;
    let identity = shared.vault.identity(&id)?;
    let (public, hd) = match identity.root_fingerprint {
        None if path.depth() > 0 => {
            return Err(Error::InvalidArgument("a path is only for HD roots"));
        }
        None => (identity.public, None),
        Some(root_fingerprint) if path.depth() == 0 => (
            identity.public,
            Some(HdFacts {
                root_fingerprint,
                ..HdFacts::default()
            }),
        ),
        Some(root_fingerprint) => {
            let derived = shared.vault.derived_identity(&id, &path)?;
            (
                derived.public,
                Some(HdFacts {
                    root_fingerprint,
                    path: path.indices(),
                    xpub: derived.xpub,
                }),
            )
        }
    };
    Ok(key_info(
        &shared.identity,
        &id,
        &identity.keyring_id,
        &public,
        &identity.policy,
        challenge,
        hd,
    ))
}

/// The state of a new enclave.
pub(super) fn shared<B: Backend>(
    settings: Settings,
    guard: ReplayGuard,
    identity: BootIdentity,
) -> Arc<State<B>> {
    let identity = Arc::new(identity);
    Arc::new(State {
        vault: Vault::new(settings.capacity),
        guard,
        limiter: RateLimiter::default(),
        ledger: SpendLedger::default(),
        audit: AuditLog::new(Arc::clone(&identity), audit::CAPACITY),
        identity,
        config: settings.encode(),
        settings,
        stamps: StampBatcher::default(),
    })
}
