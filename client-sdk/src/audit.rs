//! Verifies an audit trail as the host stored it: each boot's signing key through the
//! attestation document the host kept for it (pinned root, PCR allow-list, at the time it was
//! signed), the signatures under its boot's key, and each boot's hash chain — so a deleted entry
//! shows as a gap, a moved one as out of order, an edited one as a bad signature or a broken link.
//!
//! The enclave signs the last entry of each collection only: each entry names the hash of the
//! one before it, so a signature vouches for every earlier entry of its boot as far back as the
//! chain holds. Unsigned entries that no later signature reaches (the end of a boot, or before a
//! break in the chain) are reported: the host could have written them.
//!
//! What the trail cannot show by itself: entries after the last one stored (a missing tail of
//! the newest boot, or of a boot whose enclave died before the host collected them). The boot
//! entry of the next boot names the hash of the last entry the host held at that boot; the
//! report says where each boot links to, and whether that was the end of an earlier boot.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message as _;
use signer_attestation::AttestationPolicy;
use signer_proto::canonical::{AUDIT_ENTRY_DOMAIN, audit_entry_hash};
use signer_proto::pb;

/// What one boot's chain looks like in the trail.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BootSummary {
    /// The boot id (hex).
    pub boot_id: String,
    /// Entries stored.
    pub entries: u64,
    /// The last sequence stored; later entries, if the enclave made any, are not in the trail.
    pub last_sequence: u64,
    /// What its boot entry links to: `None` for the first boot, else the boot id (hex) and
    /// sequence of the linked entry, if the trail holds it.
    pub links_to: Option<(String, u64)>,
}

/// The verdict on a trail.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuditReport {
    /// Entries read.
    pub entries: u64,
    /// Per boot, in the order first seen.
    pub boots: Vec<BootSummary>,
    /// Everything that does not hold: empty for an intact trail.
    pub problems: Vec<String>,
}

impl AuditReport {
    /// Whether nothing was found wrong.
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

struct BootState {
    key: Option<VerifyingKey>,
    next: u64,
    head: Option<[u8; 32]>,
    /// The first unsigned entry (position, sequence) since the last signed one: a later signed
    /// entry vouches for it through the chain, if the chain holds up to it.
    unvouched: Option<(u64, u64)>,
    summary: BootSummary,
}

/// Verifies `entries` (in stored order) against the `boots`' attestation documents.
pub fn verify_trail(
    entries: &[pb::StoredAuditEntry],
    boots: &[pb::AuditBoot],
    policy: &AttestationPolicy,
) -> AuditReport {
    let mut report = AuditReport::default();
    let mut keys: HashMap<Vec<u8>, Result<VerifyingKey, String>> = HashMap::new();
    for boot in boots {
        keys.insert(boot.boot_id.clone(), boot_key(boot, policy));
    }
    let mut states: BTreeMap<Vec<u8>, BootState> = BTreeMap::new();
    let mut order: Vec<Vec<u8>> = Vec::new();
    // Every entry's hash → (boot, sequence), for the boot links.
    let mut by_hash: HashMap<[u8; 32], (Vec<u8>, u64)> = HashMap::new();
    let mut links: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for stored in entries {
        report.entries += 1;
        let position = stored.position;
        let Some(signed) = &stored.signed else {
            report.problems.push(format!("position {position}: empty"));
            continue;
        };
        let Ok(entry) = pb::AuditEntry::decode(signed.entry.as_slice()) else {
            report
                .problems
                .push(format!("position {position}: does not decode (edited?)"));
            continue;
        };
        let boot_hex = hex::encode(&entry.boot_id);
        let state = states.entry(entry.boot_id.clone()).or_insert_with(|| {
            order.push(entry.boot_id.clone());
            let key = match keys.get(&entry.boot_id) {
                Some(Ok(key)) => Some(*key),
                Some(Err(why)) => {
                    report
                        .problems
                        .push(format!("boot {boot_hex}: attestation refused: {why}"));
                    None
                }
                None => {
                    report.problems.push(format!(
                        "boot {boot_hex}: no attestation document vouches for its signing key"
                    ));
                    None
                }
            };
            BootState {
                key,
                next: 0,
                head: None,
                unvouched: None,
                summary: BootSummary {
                    boot_id: boot_hex.clone(),
                    ..BootSummary::default()
                },
            }
        });
        let is_signed = !signed.signature.is_empty();
        if let Some(key) = state.key.as_ref().filter(|_| is_signed) {
            let mut message = AUDIT_ENTRY_DOMAIN.to_vec();
            message.extend_from_slice(&signed.entry);
            let verified = Signature::from_slice(&signed.signature)
                .is_ok_and(|signature| key.verify_strict(&message, &signature).is_ok());
            if !verified {
                report.problems.push(format!(
                    "position {position}: boot {boot_hex} sequence {}: signature does not verify (edited entry)",
                    entry.sequence
                ));
                continue;
            }
        }
        let hash = audit_entry_hash(&signed.entry);
        let mut chained = true;
        match entry.sequence.cmp(&state.next) {
            std::cmp::Ordering::Greater => report.problems.push(format!(
                "position {position}: boot {boot_hex}: sequences {}..{} missing (deleted entries)",
                state.next,
                entry.sequence - 1
            )),
            std::cmp::Ordering::Less => report.problems.push(format!(
                "position {position}: boot {boot_hex}: sequence {} after {} (reordered or repeated)",
                entry.sequence,
                state.next.saturating_sub(1)
            )),
            std::cmp::Ordering::Equal => {}
        }
        chained &= entry.sequence == state.next;
        if entry.sequence == 0 {
            if entry.action() != pb::AuditAction::Boot {
                report.problems.push(format!(
                    "position {position}: boot {boot_hex}: sequence 0 is not a boot entry"
                ));
            }
            if !entry.previous_hash.is_empty() {
                links.push((entry.boot_id.clone(), entry.previous_hash.clone()));
            }
        } else if entry.sequence == state.next
            && state
                .head
                .is_some_and(|head| head.as_slice() != entry.previous_hash)
        {
            chained = false;
            report.problems.push(format!(
                "position {position}: boot {boot_hex} sequence {}: does not chain to the entry before it (one of the two was edited)",
                entry.sequence
            ));
        }
        if !chained && let Some((from, sequence)) = state.unvouched.take() {
            report.problems.push(format!(
                "positions {from}..{}: boot {boot_hex} sequences {sequence}..: no signature vouches for them (the chain breaks after them)",
                position.saturating_sub(1)
            ));
        }
        if is_signed {
            state.unvouched = None;
        } else {
            state.unvouched.get_or_insert((position, entry.sequence));
        }
        if entry.sequence >= state.next {
            state.next = entry.sequence + 1;
            state.head = Some(hash);
        }
        state.summary.entries += 1;
        state.summary.last_sequence = state.summary.last_sequence.max(entry.sequence);
        by_hash.insert(hash, (entry.boot_id.clone(), entry.sequence));
    }
    for (boot, previous) in links {
        let boot_hex = hex::encode(&boot);
        let linked = <[u8; 32]>::try_from(previous.as_slice())
            .ok()
            .and_then(|hash| by_hash.get(&hash).cloned());
        match linked {
            Some((earlier, sequence)) => {
                if let Some(state) = states.get_mut(&boot) {
                    state.summary.links_to = Some((hex::encode(&earlier), sequence));
                }
            }
            None => report.problems.push(format!(
                "boot {boot_hex}: links to an entry the trail does not hold (an earlier boot's entries were removed)"
            )),
        }
    }
    for boot in &order {
        if let Some((from, sequence)) = states.get(boot).and_then(|state| state.unvouched) {
            report.problems.push(format!(
                "position {from}: boot {} sequences {sequence}..: no signature vouches for them (unsigned entries at the end of a boot: added or edited by the store)",
                hex::encode(boot)
            ));
        }
    }
    report.boots = order
        .iter()
        .filter_map(|boot| states.remove(boot))
        .map(|state| state.summary)
        .collect();
    report
}

/// A boot's signing key, from the attestation document the host kept for it.
fn boot_key(boot: &pb::AuditBoot, policy: &AttestationPolicy) -> Result<VerifyingKey, String> {
    let verified = signer_attestation::verify_as_of_signing(&boot.attestation_document, policy)
        .map_err(|e| e.to_string())?;
    let identity = verified
        .user_data
        .as_deref()
        .and_then(|data| pb::EnclaveIdentity::decode(data).ok())
        .ok_or("the document carries no enclave identity")?;
    if identity.boot_id != boot.boot_id {
        return Err("the document is of another boot".into());
    }
    let key: [u8; 32] = identity
        .signing_public_key
        .as_slice()
        .try_into()
        .map_err(|_| "malformed signing key")?;
    VerifyingKey::from_bytes(&key).map_err(|_| "malformed signing key".into())
}
