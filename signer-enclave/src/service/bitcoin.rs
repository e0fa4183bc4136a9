//! `SignPsbt`: opens the stamped request, decodes the PSBT in the intake, finds the inputs and
//! change of the HD root it names, and — under the vault's lookup, with the policy current then
//! — derives their keys, checks every claim, judges the transaction by the root's Bitcoin rules,
//! signs, and only then authorises: the daily total is added last, so a refusal for any other
//! reason counts nothing.

use signer_proto::pb;

use super::calls::State;
use crate::Error;
use crate::audit::Note;
use crate::auth::Requirement;
use crate::backend::Backend;
use crate::intake::psbt;
use crate::intake::stamped;
use crate::policy::KeyPolicy;
use crate::policy::bitcoin::BitcoinRules;
use crate::psbt::{Reading, Script};
use crate::replay;

/// The root's Bitcoin rules, or the refusal: PSBTs are signed only under rules.
fn rules(policy: &KeyPolicy) -> Result<&BitcoinRules, Error> {
    policy
        .bitcoin
        .as_ref()
        .ok_or(Error::Refused("no bitcoin rules"))
}

/// Refuses a script kind whose signature scheme the policy does not allow.
fn schemes(policy: &KeyPolicy, kinds: &[Script]) -> Result<(), Error> {
    for kind in kinds {
        let scheme = match kind {
            Script::P2wpkh | Script::P2shP2wpkh => pb::SignatureScheme::EcdsaSecp256k1,
            Script::P2tr => pb::SignatureScheme::Bip340Schnorr,
        };
        if !policy.allows(scheme) {
            return Err(Error::Denied("scheme not allowed by the key's policy"));
        }
    }
    Ok(())
}

/// Signs one stamped `SignPsbt` request.
pub(super) async fn sign_psbt<B: Backend>(
    shared: &State<B>,
    request: &pb::SignedRequest,
) -> Result<pb::SignPsbtResponse, Error> {
    let now = replay::now_ms();
    let (received, operation) = stamped::open(request, shared.guard.rules(), now)?;
    let op = psbt::sign_psbt_op(operation)?;
    let summary = shared.vault.identity(&op.key_id)?;
    // Stamps first: nothing about the PSBT is judged for anyone but the root's approvers.
    let auth = shared
        .authenticate(received, &[&summary.policy.policy.approvers])
        .await?;
    if !summary
        .policy
        .policy
        .approvers
        .satisfied_by(auth.approvals())
    {
        return Err(Error::Denied("approver quorum not met"));
    }
    let (Some(fingerprint), Some(hd)) = (summary.root_fingerprint, &summary.policy.policy.hd)
    else {
        return Err(Error::InvalidArgument("not an HD root"));
    };
    rules(&summary.policy.policy)?;
    let reading = Reading::new(op.psbt, fingerprint, hd)?;
    drop(summary);
    let paths = reading.paths();
    let ((psbt, signed_inputs), _) =
        shared
            .vault
            .with_keys(&op.key_id, &paths, |current, keys| {
                let policy = &current.policy;
                let (facts, kinds) = reading.facts::<B>(keys)?;
                schemes(policy, &kinds)?;
                let spend = rules(policy)?.judge(&facts)?;
                drop(facts);
                let input_keys = &keys[..kinds.len()];
                let (psbt, signed_inputs) = reading.sign::<B>(input_keys, &kinds)?;
                let approvers = Requirement {
                    quorum: &policy.approvers,
                    refusal: "approver quorum not met",
                };
                let note = Note::new(
                    &shared.audit,
                    pb::AuditAction::SignPsbt,
                    op.key_id,
                    policy.version,
                );
                let authorized = auth.authorize(&[approvers], &shared.guard, now, note)?;
                // One token per signature, as for batches: the limit counts signatures.
                let count = u32::try_from(signed_inputs.len()).map_err(|_| Error::Internal)?;
                shared
                    .limiter
                    .take(&op.key_id, policy.max_per_minute, count, now)?;
                // Last: nothing after it refuses, so a total grows only for a signature made.
                shared.ledger.spend(&op.key_id, &[spend], now)?;
                Ok(((psbt, signed_inputs), authorized))
            })?;
    tracing::info!(key_id = %op.key_id, inputs = signed_inputs.len(), "PSBT signed");
    Ok(pb::SignPsbtResponse {
        key_id: op.key_id.to_string(),
        psbt: psbt.serialize(),
        signed_inputs,
    })
}
