//! `LoadKeys`: sealed records opened in batches on the blocking pool; refusals are collected
//! and reported, invariant breaches end the load.

use signer_proto::pb;
use tonic::Status;

use super::status;
use crate::Error;
use crate::backend::Backend;
use crate::ids::{KeyId, KeyringId};
use crate::vault::{Rejection, SealedRecord, Vault};

fn parse_record(key: pb::SealedKey) -> Result<SealedRecord, Error> {
    Ok(SealedRecord {
        key_id: KeyId::parse(&key.key_id)?,
        keyring_id: KeyringId::parse(&key.keyring_id)?,
        public_key: key
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| Error::InvalidArgument("public key"))?,
        policy: key.policy,
        label: key.label,
        sealed: key.sealed,
    })
}

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
        let result = match parse_record(key) {
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
    use crate::policy::{KeyPolicy, KeyringAdmins};
    use crate::provider::local::LocalProvider;

    /// A load retried after an interrupted stream sends records that are already in RAM: they
    /// are not reported as refused (the host would tell operators they are lost).
    #[tokio::test]
    async fn reloading_a_loaded_record_is_not_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let provider = LocalProvider::open(&dir.path().join("master.key"), true).unwrap();
        let admin = pb::ApiKey {
            scheme: pb::StampScheme::Ed25519.into(),
            public_key: ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .to_bytes()
                .to_vec(),
        };
        let admins = KeyringAdmins::parse(&pb::KeyringAdmins {
            admins: vec![admin.clone()],
            threshold: 1,
        })
        .unwrap();
        let policy = KeyPolicy::parse(&pb::Policy {
            approvers: vec![admin],
            threshold: 1,
            schemes: vec![1],
            ..Default::default()
        })
        .unwrap();
        let first = Vault::<K256>::default();
        let created = first.create_keyring(&provider, admins).await.unwrap();
        first.finish_loading().unwrap();
        let (record, _) = first.create_key(created.id, "", policy).unwrap();
        let wire = pb::SealedKey {
            key_id: record.key_id.to_string(),
            keyring_id: record.keyring_id.to_string(),
            public_key: record.public_key.to_vec(),
            policy: record.policy.clone(),
            label: String::new(),
            sealed: record.sealed.clone(),
        };
        let mut tampered = wire.clone();
        tampered.key_id = KeyId::random().unwrap().to_string();

        let second = Vault::<K256>::default();
        second
            .load_keyring(
                &provider,
                created.id,
                &created.wrapped,
                &created.admins,
                &created.admins_seal,
            )
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
