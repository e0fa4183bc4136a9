//! Stamped client requests: the envelope's limits, the body decoded and refused unless it is
//! canonically encoded, the time rules, and each operation validated into a domain type. Stamps
//! are verified by [`Received::authenticate`] against the set the operation is authorised by,
//! which the caller resolves from the decoded operation (the key's policy, the keyring's admins,
//! the creators).
//!
//! Why decode before verifying: the set of API keys whose stamps count depends on the body (which
//! key, which keyring), and resolving it first lets the enclave ignore strangers' stamps without
//! verifying them, so a request padded with 16 foreign stamps costs no more than an honest one.
//! Decoding is bounded (a 64 KiB body, prost's recursion limit) and yields nothing that acts
//! before the stamps verify.

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use signer_proto::pb;
use signer_proto::pb::request_body::Operation;

use crate::Error;
use crate::auth::Authenticated;
use crate::backend::Digest32;
use crate::hd::HdPath;
use crate::ids::{KeyId, KeyringId};
use crate::policy::{KeyPolicy, KeyringAdmins, Quorum};
use crate::replay::TimeRules;
use crate::stamp::{self, StampBatcher};

/// Largest BIP-340 message accepted (bodies are bounded anyway).
pub(crate) const MAX_SCHNORR_MESSAGE: usize = 16 * 1024;
/// Largest label accepted, in bytes.
pub(crate) const MAX_LABEL: usize = 128;

/// A request whose envelope, encoding and timestamp passed; its stamps are not yet verified.
#[derive(Debug)]
pub(crate) struct Received<'r> {
    body: &'r [u8],
    stamps: &'r [pb::Stamp],
    timestamp_ms: u64,
    nonce: Vec<u8>,
}

impl Received<'_> {
    /// Verifies the stamps of every API key that is a member of one of `relevant` (strangers'
    /// stamps are ignored unverified), over the stamp message for `deployment_id`; Ed25519
    /// stamps through `batcher`, together with concurrent requests' stamps.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] if a relevant stamp fails; [`Error::InvalidArgument`] for a
    /// stamp key in a non-canonical form.
    pub(crate) async fn authenticate(
        self,
        deployment_id: &str,
        relevant: &[&Quorum],
        batcher: &StampBatcher,
    ) -> Result<Authenticated, Error> {
        let body = self.body;
        let stamps = stamp::relevant(
            || signer_proto::canonical::stamp_message(deployment_id, body),
            self.stamps,
            |id| relevant.iter().find_map(|q| q.verifier(id)),
        )?;
        let approvals = stamps.verify(batcher).await?;
        Ok(Authenticated::new(
            approvals,
            self.timestamp_ms,
            self.nonce,
            Sha256::digest(body).into(),
        ))
    }
}

/// Checks the envelope, decodes the body (refusing any encoding but the canonical one), and
/// applies the time rules.
///
/// # Errors
/// [`Error::InvalidArgument`] for a malformed envelope or body; [`Error::Unauthenticated`]
/// without stamps; [`Error::Stale`] for a timestamp the rules refuse.
pub(crate) fn open<'r>(
    request: &'r pb::SignedRequest,
    rules: &TimeRules,
    now_ms: u64,
) -> Result<(Received<'r>, Operation), Error> {
    if let Some(problem) = signer_proto::envelope_problem(request) {
        return Err(Error::InvalidArgument(problem));
    }
    if request.stamps.is_empty() {
        return Err(Error::Unauthenticated("no stamps"));
    }
    let body = pb::RequestBody::decode(request.body.as_slice())
        .map_err(|_| Error::InvalidArgument("malformed body"))?;
    // One body, one meaning: unknown fields, default values written out, or fields out of order
    // would let approvers' tools and the enclave read the same bytes differently.
    if body.encode_to_vec() != request.body {
        return Err(Error::InvalidArgument("body is not canonically encoded"));
    }
    if body.timestamp_ms == 0 {
        return Err(Error::InvalidArgument("timestamp_ms is required"));
    }
    if !(16..=32).contains(&body.nonce.len()) {
        return Err(Error::InvalidArgument("nonce must be 16 to 32 bytes"));
    }
    rules.check(body.timestamp_ms, now_ms)?;
    let operation = body
        .operation
        .ok_or(Error::InvalidArgument("body names no operation"))?;
    Ok((
        Received {
            body: &request.body,
            stamps: &request.stamps,
            timestamp_ms: body.timestamp_ms,
            nonce: body.nonce,
        },
        operation,
    ))
}

pub(super) const WRONG_OPERATION: Error = Error::InvalidArgument("body is for another operation");

/// A validated sign request.
#[derive(Debug)]
pub(crate) struct SignOp {
    /// The key to sign with.
    pub key_id: KeyId,
    /// For an HD root, the derived key's path (empty otherwise).
    pub path: HdPath,
    /// What to sign.
    pub kind: SignKind,
}

impl SignOp {
    /// The scheme, as policies name it.
    pub(crate) fn scheme(&self) -> pb::SignatureScheme {
        match self.kind {
            SignKind::Ecdsa(_) => pb::SignatureScheme::EcdsaSecp256k1,
            SignKind::Schnorr(_) => pb::SignatureScheme::Bip340Schnorr,
        }
    }
}

/// What to sign, by scheme.
#[derive(Debug)]
pub(crate) enum SignKind {
    /// ECDSA over a 32-byte digest.
    Ecdsa(Digest32),
    /// BIP-340 over a message.
    Schnorr(Vec<u8>),
}

/// Validates a `SignBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub(crate) fn sign_op(operation: Operation) -> Result<SignOp, Error> {
    let Operation::Sign(body) = operation else {
        return Err(WRONG_OPERATION);
    };
    let key_id = KeyId::parse(&body.key_id)?;
    let path = HdPath::from_indices(&body.path)?;
    let kind = sign_kind(scheme(body.scheme)?, body.payload)?;
    Ok(SignOp { key_id, path, kind })
}

/// A validated batch: one key, one scheme, 1 to [`signer_proto::MAX_BATCH`] payloads.
#[derive(Debug)]
pub(crate) struct SignBatchOp {
    /// The key to sign with.
    pub key_id: KeyId,
    /// For an HD root, the derived key's path (empty otherwise).
    pub path: HdPath,
    /// The scheme of every item.
    pub scheme: pb::SignatureScheme,
    /// What to sign, in the body's order.
    pub items: Vec<SignKind>,
}

/// Validates a `SignBatchBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub(crate) fn sign_batch_op(operation: Operation) -> Result<SignBatchOp, Error> {
    let Operation::SignBatch(body) = operation else {
        return Err(WRONG_OPERATION);
    };
    let key_id = KeyId::parse(&body.key_id)?;
    let path = HdPath::from_indices(&body.path)?;
    let scheme = scheme(body.scheme)?;
    if body.payloads.is_empty() || body.payloads.len() > signer_proto::MAX_BATCH {
        return Err(Error::InvalidArgument("a batch holds 1 to 256 payloads"));
    }
    let items = body
        .payloads
        .into_iter()
        .map(|payload| sign_kind(scheme, payload))
        .collect::<Result<_, _>>()?;
    Ok(SignBatchOp {
        key_id,
        path,
        scheme,
        items,
    })
}

fn scheme(scheme: i32) -> Result<pb::SignatureScheme, Error> {
    match pb::SignatureScheme::try_from(scheme) {
        Ok(pb::SignatureScheme::Unspecified) | Err(_) => {
            Err(Error::InvalidArgument("unknown signature scheme"))
        }
        Ok(known) => Ok(known),
    }
}

/// One payload, as its (known) scheme reads it.
fn sign_kind(scheme: pb::SignatureScheme, payload: Vec<u8>) -> Result<SignKind, Error> {
    match scheme {
        pb::SignatureScheme::EcdsaSecp256k1 => {
            let digest: [u8; 32] = payload
                .as_slice()
                .try_into()
                .map_err(|_| Error::InvalidArgument("ECDSA payload must be a 32-byte digest"))?;
            Ok(SignKind::Ecdsa(Digest32(digest)))
        }
        pb::SignatureScheme::Bip340Schnorr => {
            if payload.len() > MAX_SCHNORR_MESSAGE {
                return Err(Error::InvalidArgument("BIP-340 message too long"));
            }
            Ok(SignKind::Schnorr(payload))
        }
        pb::SignatureScheme::Unspecified => Err(Error::InvalidArgument("unknown signature scheme")),
    }
}

/// A validated create-key (or the common part of an import) request.
#[derive(Debug)]
pub(crate) struct CreateOp {
    /// The keyring.
    pub keyring_id: KeyringId,
    /// The caller's label.
    pub label: String,
    /// The new key's policy, at version 1.
    pub policy: KeyPolicy,
    /// What to create.
    pub kind: pb::KeyKind,
}

pub(super) fn create_op(
    keyring_id: &str,
    label: String,
    policy: Option<&pb::Policy>,
    kind: i32,
) -> Result<CreateOp, Error> {
    let kind =
        pb::KeyKind::try_from(kind).map_err(|_| Error::InvalidArgument("unknown key kind"))?;
    if label.len() > MAX_LABEL {
        return Err(Error::InvalidArgument("label longer than 128 bytes"));
    }
    if keyring_id.is_empty() {
        return Err(Error::InvalidArgument("keyring_id is required"));
    }
    let mut policy = KeyPolicy::parse(policy.ok_or(Error::InvalidArgument("policy is required"))?)?;
    policy.version = 1;
    Ok(CreateOp {
        keyring_id: KeyringId::parse(keyring_id)?,
        label,
        policy,
        kind,
    })
}

/// Validates a `CreateKeyBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub(crate) fn create_key_op(operation: Operation) -> Result<CreateOp, Error> {
    let Operation::CreateKey(body) = operation else {
        return Err(WRONG_OPERATION);
    };
    create_op(
        &body.keyring_id,
        body.label,
        body.policy.as_ref(),
        body.kind,
    )
}

/// Validates a `CreateKeyringBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub(crate) fn create_keyring_op(operation: Operation) -> Result<KeyringAdmins, Error> {
    let Operation::CreateKeyring(body) = operation else {
        return Err(WRONG_OPERATION);
    };
    KeyringAdmins::parse(
        body.admins
            .as_ref()
            .ok_or(Error::InvalidArgument("keyring admins are required"))?,
    )
}

/// A validated policy change.
#[derive(Debug)]
pub(crate) struct UpdatePolicyOp {
    /// The key.
    pub key_id: KeyId,
    /// Hash of the policy the change replaces.
    pub current_policy_hash: [u8; 32],
    /// The new policy (version still to be set).
    pub policy: KeyPolicy,
}

/// Validates an `UpdatePolicyBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub(crate) fn update_policy_op(operation: Operation) -> Result<UpdatePolicyOp, Error> {
    let Operation::UpdatePolicy(body) = operation else {
        return Err(WRONG_OPERATION);
    };
    Ok(UpdatePolicyOp {
        key_id: KeyId::parse(&body.key_id)?,
        current_policy_hash: body
            .current_policy_hash
            .as_slice()
            .try_into()
            .map_err(|_| Error::InvalidArgument("current_policy_hash must be 32 bytes"))?,
        policy: KeyPolicy::parse(
            body.policy
                .as_ref()
                .ok_or(Error::InvalidArgument("policy is required"))?,
        )?,
    })
}

#[cfg(test)]
mod tests;
