//! The audit trail: every decision on a stamped request becomes an entry of this boot's hash
//! chain, signed by the boot's attested identity key, and waits here until the host collects it
//! (`ReadAudit`). Successes are appended where the request is committed (`Authorized::commit`),
//! refusals where the call answers. Formats in `SPEC.md`, "Audit trail".
//!
//! An entry is fixed (encoded, and chained by its hash) when it is appended. Only the last entry
//! of each collection is signed, when the host collects, outside the chain's lock: each entry
//! names its predecessor's hash, so one signature vouches for every entry of its boot before
//! it, and the trail costs one signature (≈ 20 µs) per collection instead of one per decision.
//!
//! While the entries awaiting the host fill the buffer, operations that would succeed are
//! refused (nothing is signed unaudited); refusals are then only counted, and the count is
//! carried by the next entry.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use prost::Message as _;
use sha2::{Digest as _, Sha256};
use signer_proto::canonical::audit_entry_hash;
use signer_proto::pb;

use crate::Error;
use crate::identity::BootIdentity;
use crate::replay;
use crate::stamp::ApiKeyId;

/// Entries awaiting the host, at most (a few hundred bytes each): past it, operations that
/// would succeed are refused until the host collects.
pub(crate) const CAPACITY: usize = 100_000;

/// Entries handed to the host per `ReadAudit` call, at most.
pub(crate) const READ_LIMIT: usize = 1_000;

/// What a committed request records, besides its approvers and body.
#[derive(Debug)]
pub struct Note<'a> {
    /// The log to append to.
    pub(crate) log: &'a AuditLog,
    /// What was done.
    pub(crate) action: pb::AuditAction,
    /// The key (or keyring) concerned; set later where the vault draws the id.
    pub(crate) subject: String,
    /// The policy version decided under.
    pub(crate) policy_version: u64,
}

impl<'a> Note<'a> {
    /// A note about `subject` under policy `policy_version`.
    pub(crate) fn new(
        log: &'a AuditLog,
        action: pb::AuditAction,
        subject: impl ToString,
        policy_version: u64,
    ) -> Self {
        Self {
            log,
            action,
            subject: subject.to_string(),
            policy_version,
        }
    }
}

struct Chain {
    next_sequence: u64,
    head: [u8; 32],
    /// Encoded entries awaiting the host, by sequence.
    pending: VecDeque<(u64, Vec<u8>)>,
    unrecorded_refusals: u64,
}

/// This boot's chain and the entries the host has not collected.
pub struct AuditLog {
    identity: Arc<BootIdentity>,
    capacity: usize,
    chain: Mutex<Chain>,
}

impl core::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AuditLog")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// An empty chain signed by `identity`, holding at most `capacity` uncollected entries.
    pub(crate) fn new(identity: Arc<BootIdentity>, capacity: usize) -> Self {
        Self {
            identity,
            capacity: capacity.max(1),
            chain: Mutex::new(Chain {
                next_sequence: 0,
                head: [0; 32],
                pending: VecDeque::new(),
                unrecorded_refusals: 0,
            }),
        }
    }

    fn chain(&self) -> std::sync::MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses an operation that would succeed while the buffer is full.
    ///
    /// # Errors
    /// [`Error::Capacity`].
    pub(crate) fn room(&self) -> Result<(), Error> {
        if self.chain().pending.len() >= self.capacity {
            return Err(Error::Capacity(
                "audit entries awaiting the host fill the buffer",
            ));
        }
        Ok(())
    }

    /// The boot entry, linking to `previous_hash` (the host's report of the last stored entry
    /// of an earlier boot). Only the first call appends.
    pub(crate) fn boot(&self, previous_hash: &[u8]) {
        let mut chain = self.chain();
        if chain.next_sequence != 0 {
            return;
        }
        let entry = pb::AuditEntry {
            action: pb::AuditAction::Boot.into(),
            outcome: "ok".into(),
            previous_hash: previous_hash.iter().copied().take(32).collect(),
            ..pb::AuditEntry::default()
        };
        self.append(&mut chain, entry);
    }

    /// A committed request.
    pub(crate) fn committed(&self, note: &Note<'_>, approvers: &[ApiKeyId], body_hash: &[u8; 32]) {
        let entry = pb::AuditEntry {
            action: note.action.into(),
            outcome: "ok".into(),
            subject: note.subject.clone(),
            approvers: approvers.iter().map(approver_hash).collect(),
            body_hash: body_hash.to_vec(),
            policy_version: note.policy_version,
            ..pb::AuditEntry::default()
        };
        let mut chain = self.chain();
        self.append(&mut chain, entry);
    }

    /// A refused request, answered with `code`.
    pub(crate) fn refused(&self, action: pb::AuditAction, body: &[u8], code: tonic::Code) {
        let mut chain = self.chain();
        if chain.next_sequence == 0 {
            return; // not ready yet: no decision was taken
        }
        if chain.pending.len() >= self.capacity {
            chain.unrecorded_refusals += 1;
            return;
        }
        let entry = pb::AuditEntry {
            action: action.into(),
            outcome: format!("{code:?}"),
            body_hash: Sha256::digest(body).to_vec(),
            ..pb::AuditEntry::default()
        };
        self.append(&mut chain, entry);
    }

    fn append(&self, chain: &mut Chain, mut entry: pb::AuditEntry) {
        entry.boot_id = self.identity.boot().id.to_vec();
        entry.sequence = chain.next_sequence;
        entry.time_ms = replay::now_ms();
        if entry.sequence > 0 {
            entry.previous_hash = chain.head.to_vec();
        }
        entry.unrecorded_refusals = std::mem::take(&mut chain.unrecorded_refusals);
        let encoded = entry.encode_to_vec();
        chain.head = audit_entry_hash(&encoded);
        chain.pending.push_back((entry.sequence, encoded));
        chain.next_sequence += 1;
    }

    /// Frees the entries up to `after` (the host has stored them) and returns those after it,
    /// the last one signed: its signature covers every entry before it through the chain's
    /// hashes (signing runs after the lock is released).
    pub(crate) fn read(&self, after: Option<u64>, limit: usize) -> Vec<pb::SignedAuditEntry> {
        let entries: Vec<Vec<u8>> = {
            let mut chain = self.chain();
            if let Some(after) = after {
                while chain.pending.front().is_some_and(|(seq, _)| *seq <= after) {
                    chain.pending.pop_front();
                }
            }
            chain
                .pending
                .iter()
                .filter(|(seq, _)| after.is_none_or(|after| *seq > after))
                .take(limit.clamp(1, READ_LIMIT))
                .map(|(_, encoded)| encoded.clone())
                .collect()
        };
        let last = entries.len().saturating_sub(1);
        entries
            .into_iter()
            .enumerate()
            .map(|(index, encoded)| {
                if index == last {
                    self.identity.audit_entry(encoded)
                } else {
                    pb::SignedAuditEntry {
                        entry: encoded,
                        signature: Vec::new(),
                    }
                }
            })
            .collect()
    }
}

/// SHA-256 of an approving API key's encoding, as the entry names it.
fn approver_hash(key: &ApiKeyId) -> Vec<u8> {
    Sha256::digest(key.to_proto().encode_to_vec()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Boot;

    fn log(capacity: usize) -> AuditLog {
        let boot = Boot {
            id: [7; 16],
            time_ms: 1,
            deployment_id: "test".into(),
            config_hash: [0; 32],
        };
        AuditLog::new(Arc::new(BootIdentity::generate(boot).unwrap()), capacity)
    }

    fn decode(signed: &pb::SignedAuditEntry) -> pb::AuditEntry {
        pb::AuditEntry::decode(signed.entry.as_slice()).unwrap()
    }

    #[test]
    fn entries_chain_and_are_freed_once_collected() {
        let log = log(3);
        log.refused(pb::AuditAction::Sign, b"early", tonic::Code::Unavailable);
        assert!(
            log.read(None, 10).is_empty(),
            "nothing before the boot entry"
        );
        log.boot(&[9; 32]);
        log.boot(&[8; 32]);
        let note = Note::new(&log, pb::AuditAction::Sign, "k-1", 2);
        log.committed(&note, &[], &[1; 32]);
        let entries = log.read(None, 10);
        assert_eq!(entries.len(), 2);
        // Only the last entry of a collection is signed; the chain carries it to the others.
        let identity = pb::EnclaveIdentity::decode(log.identity.user_data().as_slice()).unwrap();
        let key = ed25519_dalek::VerifyingKey::from_bytes(
            identity.signing_public_key.as_slice().try_into().unwrap(),
        )
        .unwrap();
        let message = [
            signer_proto::canonical::AUDIT_ENTRY_DOMAIN,
            &entries[1].entry,
        ]
        .concat();
        let signature = ed25519_dalek::Signature::from_slice(&entries[1].signature).unwrap();
        key.verify_strict(&message, &signature).unwrap();
        assert!(entries[0].signature.is_empty());
        let (boot, sign) = (decode(&entries[0]), decode(&entries[1]));
        assert_eq!((boot.sequence, boot.previous_hash), (0, vec![9; 32]));
        assert_eq!(sign.sequence, 1);
        assert_eq!(sign.previous_hash, audit_entry_hash(&entries[0].entry));
        assert_eq!(sign.policy_version, 2);

        // Full: a success is refused, a refusal only counted, and the count carried on.
        log.refused(pb::AuditAction::Sign, b"x", tonic::Code::PermissionDenied);
        assert!(log.room().is_err());
        log.refused(pb::AuditAction::Sign, b"y", tonic::Code::PermissionDenied);
        assert_eq!(log.read(Some(1), 10).len(), 1, "0 and 1 freed");
        assert!(log.room().is_ok());
        log.committed(&note, &[], &[2; 32]);
        let last = decode(log.read(Some(2), 10).last().unwrap());
        assert_eq!((last.sequence, last.unrecorded_refusals), (3, 1));
    }
}
