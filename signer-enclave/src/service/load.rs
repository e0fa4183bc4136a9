//! `LoadKeys`: sealed records opened in batches on the blocking pool (the boot load, or a sync
//! from a shared store once ready); refusals are collected and reported, invariant breaches end
//! the load.

use signer_proto::pb;
use tonic::Status;

use super::status;
use crate::backend::Backend;
use crate::intake;
use crate::vault::{Phase, Rejection, Synced, Vault};

/// Records opened per blocking task during `LoadKeys`.
pub(super) const LOAD_BATCH: usize = 1024;

/// Opens a batch of stored records; refusals are collected, invariant breaches end the load.
pub(super) fn load_batch<B: Backend>(
    vault: &Vault<B>,
    records: Vec<pb::SealedKey>,
) -> Result<pb::LoadKeysResponse, Status> {
    let mut outcome = pb::LoadKeysResponse::default();
    for key in records {
        let claimed: String = key.key_id.chars().take(64).collect();
        let result = match intake::host::record(key) {
            // A ready vault syncs: records of keys it holds can only move their policy forward.
            Ok(record) if vault.phase() == Phase::Ready => {
                match vault.sync_key(&record).map_err(|e| status("LoadKeys", e))? {
                    Ok(Synced::Current) => continue,
                    Ok(Synced::Added) => Ok(()),
                    Ok(Synced::Replaced) => {
                        outcome.updated += 1;
                        continue;
                    }
                    Err(rejection) => Err(rejection.reason()),
                }
            }
            Ok(record) => match vault.load_key(&record).map_err(|e| status("LoadKeys", e))? {
                // Already in RAM (a load retried after an interrupted stream): nothing to report.
                Err(Rejection::Duplicate) => {
                    tracing::debug!(key_id = %claimed, "sealed record already loaded");
                    continue;
                }
                other => other.map_err(Rejection::reason),
            },
            Err(_) => Err("malformed"),
        };
        match result {
            Ok(()) => outcome.loaded += 1,
            Err(reason) => {
                tracing::warn!(key_id = %claimed, reason, "sealed record refused");
                outcome.rejected.push(pb::RejectedKey {
                    key_id: claimed,
                    reason: reason.to_owned(),
                });
            }
        }
    }
    Ok(outcome)
}

pub(super) fn merge(
    total: &mut pb::LoadKeysResponse,
    joined: Option<Result<Result<pb::LoadKeysResponse, Status>, tokio::task::JoinError>>,
) -> Result<(), Status> {
    let Some(joined) = joined else { return Ok(()) };
    let batch = joined.map_err(|_| Status::internal("internal error"))??;
    total.loaded += batch.loaded;
    total.updated += batch.updated;
    total.rejected.extend(batch.rejected);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::backend::K256;
    use crate::ids::KeyId;
    use crate::provider::local::LocalProvider;
    use crate::testing::{admins, authorized, guard, policy, stored};

    /// A load retried after an interrupted stream sends records that are already in RAM: they
    /// are not reported as refused (the host would tell operators they are lost).
    #[tokio::test]
    async fn reloading_a_loaded_record_is_not_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let provider = LocalProvider::open(&dir.path().join("master.key"), true).unwrap();
        let guard = guard();
        let first = Vault::<K256>::default();
        first.finish_loading().unwrap();
        let (created, _) = first
            .create_keyring(&provider, admins(), authorized(&guard))
            .await
            .unwrap();
        let record = first
            .create_key(created.id, "", policy(1), authorized(&guard))
            .unwrap()
            .record;
        let wire = pb::SealedKey::from(record);
        let mut tampered = wire.clone();
        tampered.key_id = KeyId::random().unwrap().to_string();

        let second = Vault::<K256>::default();
        second
            .load_keyring(&provider, &stored(&created))
            .await
            .unwrap();
        let outcome = load_batch(&second, vec![wire.clone(), wire, tampered]).unwrap();
        assert_eq!(outcome.loaded, 1);
        assert_eq!(
            outcome.rejected.len(),
            1,
            "only the record under another id is refused"
        );
        assert_eq!(outcome.rejected[0].reason, "seal check failed");
    }

    /// Once ready, records from a shared store add keys another enclave made and move a held
    /// key's policy forward, never back.
    #[tokio::test]
    async fn a_ready_vault_syncs_new_keys_and_newer_policies_only() {
        let dir = tempfile::tempdir().unwrap();
        let provider = LocalProvider::open(&dir.path().join("master.key"), true).unwrap();
        let guard = guard();
        let first = Vault::<K256>::default();
        first.finish_loading().unwrap();
        let (keyring, _) = first
            .create_keyring(&provider, admins(), authorized(&guard))
            .await
            .unwrap();
        let created = first
            .create_key(keyring.id, "", policy(1), authorized(&guard))
            .unwrap();
        let key_id = created.record.key_id;
        let v1 = pb::SealedKey::from(created.record);

        let second = Vault::<K256>::default();
        second
            .load_keyring(&provider, &stored(&keyring))
            .await
            .unwrap();
        assert_eq!(load_batch(&second, vec![v1.clone()]).unwrap().loaded, 1);
        second.finish_loading().unwrap();

        let changed = first
            .update_policy(&key_id, &created.policy.hash, policy(2), |_| {
                Ok(authorized(&guard))
            })
            .unwrap();
        let v2 = pb::SealedKey::from(changed.record);
        let outcome = load_batch(&second, vec![v2.clone(), v2]).unwrap();
        assert_eq!((outcome.loaded, outcome.updated), (0, 1));
        assert!(outcome.rejected.is_empty());
        let summary = second.identity(&key_id).unwrap();
        assert_eq!(summary.policy.hash, changed.policy.hash);

        let outcome = load_batch(&second, vec![v1]).unwrap();
        assert_eq!(outcome.rejected[0].reason, "older policy");
        assert_eq!(
            second.identity(&key_id).unwrap().policy.hash,
            changed.policy.hash
        );

        // A keyring and a key made on the first after the second became ready.
        let (later, _) = first
            .create_keyring(&provider, admins(), authorized(&guard))
            .await
            .unwrap();
        let new_key = first
            .create_key(later.id, "", policy(3), authorized(&guard))
            .unwrap()
            .record;
        let new_id = new_key.key_id;
        let wire = pb::SealedKey::from(new_key);
        assert_eq!(
            load_batch(&second, vec![wire.clone()]).unwrap().rejected[0].reason,
            "unknown keyring"
        );
        // A host cannot pair a keyring with another keyring's admin seal once ready either.
        let mut forged = stored(&later);
        forged.admins_seal = stored(&keyring).admins_seal;
        assert!(matches!(
            second.load_keyring(&provider, &forged).await,
            Err(Error::SealCheckFailed)
        ));
        second
            .load_keyring(&provider, &stored(&later))
            .await
            .unwrap();
        second
            .load_keyring(&provider, &stored(&later))
            .await
            .unwrap();
        assert_eq!(load_batch(&second, vec![wire]).unwrap().loaded, 1);
        assert!(second.identity(&new_id).is_ok());
    }
}
