//! Authorisation as a type. A request's stamps are verified against the set its operation is
//! authorised by ([`Authenticated`]); [`Authenticated::authorize`] checks the quorums and
//! reserves the nonce, and only then yields an [`Authorized`] proof. The vault's methods that
//! sign, create or change keys take that proof (or a closure that must produce it under the
//! same lock as the action), so an operation whose check was skipped does not compile.
//! rustls' `HandshakeSignatureValid` and `ServerCertVerified` are the model.
//!
//! The proof cannot be forged: its fields are private and its only constructor is
//! [`Authenticated::authorize`], whose input ([`Authenticated`]) only the intake makes, after the
//! stamps verified. So this does not compile:
//!
//! ```compile_fail,E0451
//! fn forge(reservation: signer_enclave::replay::Reservation<'_>) -> signer_enclave::auth::Authorized<'_> {
//!     signer_enclave::auth::Authorized { reservation, body_hash: [0; 32], approvers: vec![], note: todo!() }
//! }
//! ```

use crate::Error;
use crate::audit::Note;
use crate::policy::Quorum;
use crate::replay::{ReplayGuard, Reservation};
use crate::stamp::{ApiKeyId, Approvals};

/// A request whose relevant stamps verified and whose timestamp met the time rules. Nothing is
/// spent yet.
#[derive(Debug)]
pub struct Authenticated {
    approvals: Approvals,
    timestamp_ms: u64,
    nonce: Vec<u8>,
    body_hash: [u8; 32],
}

/// One quorum a request must meet, and what to log when it does not.
#[derive(Clone, Copy, Debug)]
pub struct Requirement<'a> {
    /// The quorum.
    pub quorum: &'a Quorum,
    /// The log's reason when it is not met.
    pub refusal: &'static str,
}

impl Authenticated {
    /// Wraps the verified parts of a request (done by the intake).
    pub(crate) fn new(
        approvals: Approvals,
        timestamp_ms: u64,
        nonce: Vec<u8>,
        body_hash: [u8; 32],
    ) -> Self {
        Self {
            approvals,
            timestamp_ms,
            nonce,
            body_hash,
        }
    }

    /// The API keys whose stamps verified.
    pub fn approvals(&self) -> &Approvals {
        &self.approvals
    }

    /// SHA-256 of the body, echoed in signed statements.
    pub fn body_hash(&self) -> &[u8; 32] {
        &self.body_hash
    }

    /// The body's nonce (bound into import ciphertexts).
    pub fn nonce(&self) -> &[u8] {
        &self.nonce
    }

    /// Checks every requirement against the verified approvals, then that the audit trail has
    /// room, then reserves the nonce, charged to the first member (in member order) that
    /// counted toward the first requirement. `note` is what the audit entry will say once the
    /// request is committed.
    ///
    /// # Errors
    /// [`Error::Denied`] with the first unmet requirement's reason; [`Error::Capacity`] while
    /// the audit entries awaiting the host fill their buffer; the replay guard's errors.
    pub fn authorize<'g>(
        &self,
        requirements: &[Requirement<'_>],
        guard: &'g ReplayGuard,
        now: u64,
        note: Note<'g>,
    ) -> Result<Authorized<'g>, Error> {
        let mut owner: Option<&ApiKeyId> = None;
        let mut approvers: Vec<ApiKeyId> = Vec::new();
        for requirement in requirements {
            if !requirement.quorum.satisfied_by(&self.approvals) {
                return Err(Error::Denied(requirement.refusal));
            }
            owner = owner.or_else(|| requirement.quorum.approving(&self.approvals).next());
            for approver in requirement.quorum.approving(&self.approvals) {
                if !approvers.contains(approver) {
                    approvers.push(*approver);
                }
            }
        }
        let owner = owner.ok_or(Error::Denied("no requirement to authorise against"))?;
        note.log.room()?;
        let reservation = guard.reserve(self.timestamp_ms, &self.nonce, owner, now)?;
        Ok(Authorized {
            reservation,
            body_hash: self.body_hash,
            approvers,
            note,
        })
    }
}

/// Proof that a request met its quorums, with its nonce reserved. Made only by
/// [`Authenticated::authorize`]; consumed by [`Authorized::commit`] at the point of no return.
#[derive(Debug)]
#[must_use = "an authorisation dropped uncommitted releases its nonce"]
pub struct Authorized<'g> {
    reservation: Reservation<'g>,
    body_hash: [u8; 32],
    /// The API keys that counted toward the quorums, in quorum order.
    approvers: Vec<ApiKeyId>,
    note: Note<'g>,
}

/// What remains of an [`Authorized`] request once committed: the body hash its replies answer.
#[derive(Clone, Copy, Debug)]
pub struct Committed {
    /// SHA-256 of the body.
    pub body_hash: [u8; 32],
}

impl Authorized<'_> {
    /// Spends the nonce and appends the audit entry: the operation runs now. Call only where
    /// nothing retryable can fail after it.
    pub fn commit(self) -> Committed {
        self.reservation.commit();
        self.note
            .log
            .committed(&self.note, &self.approvers, &self.body_hash);
        Committed {
            body_hash: self.body_hash,
        }
    }

    /// Names what the audit entry is about, once the vault has drawn its id.
    pub fn about(&mut self, subject: impl ToString) {
        self.note.subject = subject.to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::TimeRules;
    use signer_proto::pb;

    const NOW: u64 = 1_800_000_000_000;

    fn key(seed: u8) -> ApiKeyId {
        let public = ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes();
        ApiKeyId::Ed25519(public)
    }

    fn guard() -> ReplayGuard {
        let rules = TimeRules {
            window_ms: 1_000,
            future_skew_ms: 100,
            boot_skew_ms: 100,
            boot_ms: NOW - 10_000,
        };
        ReplayGuard::new(rules, 10, 10)
    }

    fn quorum(seeds: &[u8], threshold: u32) -> Quorum {
        let members: Vec<pb::ApiKey> = seeds.iter().map(|&s| key(s).to_proto()).collect();
        Quorum::parse(&members, threshold, "test").unwrap()
    }

    fn authenticated(seeds: &[u8], nonce: u8) -> Authenticated {
        Authenticated::new(
            Approvals::of(seeds.iter().map(|&s| key(s))),
            NOW,
            vec![nonce; 16],
            [0; 32],
        )
    }

    fn note() -> Note<'static> {
        Note::new(crate::testing::audit_log(), pb::AuditAction::Sign, "", 1)
    }

    #[test]
    fn every_requirement_must_hold_before_the_nonce_is_touched() {
        let guard = guard();
        let (two_of_three, creators) = (quorum(&[1, 2, 3], 2), quorum(&[9], 1));
        let need = |q| Requirement {
            quorum: q,
            refusal: "not met",
        };
        let one = authenticated(&[1, 9], 1);
        assert!(matches!(
            one.authorize(&[need(&creators), need(&two_of_three)], &guard, NOW, note()),
            Err(Error::Denied("not met"))
        ));
        assert!(guard.is_empty(), "a refusal spends nothing");
        let both = authenticated(&[1, 2, 9], 2);
        let authorized = both
            .authorize(&[need(&creators), need(&two_of_three)], &guard, NOW, note())
            .unwrap();
        assert_eq!(guard.len(), 1);
        drop(authorized);
        assert!(guard.is_empty(), "dropped uncommitted: released");
        let authorized = both
            .authorize(&[need(&two_of_three)], &guard, NOW, note())
            .unwrap();
        authorized.commit();
        assert!(matches!(
            both.authorize(&[need(&two_of_three)], &guard, NOW, note()),
            Err(Error::Unauthenticated("nonce replayed"))
        ));
    }
}
