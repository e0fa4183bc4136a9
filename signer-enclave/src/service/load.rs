//! `LoadKeys`: sealed records opened in batches on the blocking pool; refusals are collected
//! and reported, invariant breaches end the load.

use signer_proto::pb;
use tonic::Status;

use super::status;
use crate::backend::Backend;
use crate::intake;
use crate::vault::{Rejection, Vault};

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
    total.rejected.extend(batch.rejected);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
