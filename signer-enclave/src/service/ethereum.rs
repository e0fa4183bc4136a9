//! `SignEthereum`: opens the stamped request, decodes the payload in the intake, judges it by
//! the key's Ethereum rules, and signs the digest the enclave computed itself. The rules are
//! read again under the vault's lookup, with the quorum the rules' approval tier demands; daily
//! totals are added last, so a refusal for any other reason counts nothing.

use signer_proto::pb;

use super::calls::State;
use crate::Error;
use crate::audit::Note;
use crate::auth::Requirement;
use crate::backend::Backend;
use crate::intake::ethereum::{self, EthPayload};
use crate::intake::stamped;
use crate::policy::KeyPolicy;
use crate::policy::ethereum::Verdict;
use crate::replay;

/// Judges `payload` by `policy`: the scheme must be allowed, and the rules (if any) must pass.
fn judge<'p>(policy: &'p KeyPolicy, payload: &EthPayload) -> Result<Verdict<'p>, Error> {
    if !policy.allows(pb::SignatureScheme::EcdsaSecp256k1) {
        return Err(Error::Denied("scheme not allowed by the key's policy"));
    }
    let Some(rules) = &policy.ethereum else {
        return Ok(Verdict::default());
    };
    match payload {
        EthPayload::Transaction(tx) => rules.transaction(&tx.facts),
        EthPayload::PersonalMessage(_) => rules.personal_message().map(|()| Verdict::default()),
        EthPayload::TypedData(_, domain) => rules.typed_data(domain).map(|()| Verdict::default()),
    }
}

/// Signs one stamped `SignEthereum` request.
pub(super) async fn sign_ethereum<B: Backend>(
    shared: &State<B>,
    request: &pb::SignedRequest,
) -> Result<pb::SignEthereumResponse, Error> {
    let now = replay::now_ms();
    let (received, operation) = stamped::open(request, shared.guard.rules(), now)?;
    let op = ethereum::sign_ethereum_op(operation)?;
    let snapshot = shared.vault.policy(&op.key_id)?;
    // Stamps first: the rules are judged only for a quorum of the key's own approvers, so
    // nobody else can probe them.
    let auth = shared
        .authenticate(received, &[&snapshot.policy.approvers])
        .await?;
    if !snapshot.policy.approvers.satisfied_by(auth.approvals()) {
        return Err(Error::Denied("approver quorum not met"));
    }
    judge(&snapshot.policy, &op.payload)?;
    drop(snapshot);
    let digest = op.payload.digest();
    let (signature, _) = shared.vault.sign(
        &op.key_id,
        &op.path,
        |current| {
            let verdict = judge(&current.policy, &op.payload)?;
            let approvers = Requirement {
                quorum: &current.policy.approvers,
                refusal: "approver quorum not met",
            };
            // Approved, but not by enough for this value: say so, as the rule it is.
            if let Some(quorum) = verdict.tier
                && current.policy.approvers.satisfied_by(auth.approvals())
                && !quorum.satisfied_by(auth.approvals())
            {
                return Err(Error::Refused("approval tier quorum not met"));
            }
            let tier = verdict.tier.map(|quorum| Requirement {
                quorum,
                refusal: "approval tier quorum not met",
            });
            let requirements: Vec<Requirement<'_>> =
                [Some(approvers), tier].into_iter().flatten().collect();
            let note = Note::new(
                &shared.audit,
                pb::AuditAction::SignEthereum,
                op.key_id,
                current.policy.version,
            );
            let authorized = auth.authorize(&requirements, &shared.guard, now, note)?;
            shared
                .limiter
                .take(&op.key_id, current.policy.max_per_minute, 1, now)?;
            // Last: nothing after it refuses, so a total grows only for a signature made.
            shared.ledger.spend(&op.key_id, &verdict.spends, now)?;
            Ok(authorized)
        },
        |key| B::sign_ecdsa(key, &digest),
    )?;
    // Recovery ids 2 and 3 (r ≥ n, probability about 2^-128) have no Ethereum encoding.
    if signature.recovery_id > 1 {
        return Err(Error::Internal);
    }
    Ok(ethereum::response(
        &op.key_id,
        op.payload,
        &signature.rs,
        signature.recovery_id == 1,
    ))
}
