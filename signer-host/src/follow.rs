//! Keeps a ready enclave in step with a store other hosts write to: keyrings it has not opened,
//! then every key inserted or updated since the last revision it was sent, through `LoadKeys`
//! (which, once ready, adds keys and moves policies forward only).

use std::collections::HashSet;
use std::sync::Arc;

use signer_proto::pb;
use signer_proto::pb::enclave_service_client::EnclaveServiceClient;
use tonic::transport::Channel;

use crate::Error;
use crate::store::{KeyStore, blocking};

/// Records sent per `LoadKeys` call while following.
const PAGE: usize = 2_000;

/// What one enclave boot has been sent.
#[derive(Debug)]
pub struct Followed {
    boot_id: Vec<u8>,
    revision: u64,
    keyrings: HashSet<String>,
}

impl Followed {
    /// After a boot load that began at store revision `revision` and opened `keyrings`.
    pub fn loaded(boot_id: Vec<u8>, revision: u64, keyrings: HashSet<String>) -> Self {
        Self {
            boot_id,
            revision,
            keyrings,
        }
    }

    /// For a ready enclave this host did not load (the host restarted, the enclave did not):
    /// everything is sent once; what it holds already costs a lookup each.
    pub fn unknown(boot_id: Vec<u8>) -> Self {
        Self::loaded(boot_id, 0, HashSet::new())
    }

    /// Whether this follows that boot.
    pub fn is_for(&self, boot_id: &[u8]) -> bool {
        self.boot_id == boot_id
    }
}

/// What one pass brought.
#[derive(Debug, Default)]
pub struct Brought {
    /// Keyrings opened.
    pub keyrings: usize,
    /// Keys added.
    pub added: u64,
    /// Held keys whose policy moved.
    pub updated: u64,
    /// Records refused.
    pub rejected: usize,
}

/// One pass: new keyrings, then changed keys, until the store has nothing newer.
///
/// # Errors
/// Store or enclave failures; the next pass starts where this one stopped. A keyring that
/// cannot be opened stops the pass before any key is sent, so that its keys are not refused
/// and skipped for good.
pub async fn follow(
    enclave: &EnclaveServiceClient<Channel>,
    store: &Arc<dyn KeyStore>,
    followed: &mut Followed,
) -> Result<Brought, Error> {
    let mut enclave = enclave.clone();
    let mut brought = Brought::default();
    let keyrings = blocking({
        let store = Arc::clone(store);
        move || store.keyrings()
    })
    .await?;
    for keyring in keyrings {
        if followed.keyrings.contains(&keyring.keyring_id) {
            continue;
        }
        enclave
            .load_keyring(pb::LoadKeyringRequest::from(&keyring))
            .await
            .map_err(Box::new)?;
        tracing::info!(keyring_id = %keyring.keyring_id, "keyring from the shared store opened");
        followed.keyrings.insert(keyring.keyring_id);
        brought.keyrings += 1;
    }
    loop {
        let after = followed.revision;
        let page = blocking({
            let store = Arc::clone(store);
            move || store.changes_after(after, PAGE)
        })
        .await?;
        let Some(&(last, _)) = page.last() else {
            return Ok(brought);
        };
        let records: Vec<pb::SealedKey> = page.into_iter().map(|(_, key)| key.into()).collect();
        let result = enclave
            .load_keys(tokio_stream::iter(records))
            .await
            .map_err(Box::new)?
            .into_inner();
        for rejected in &result.rejected {
            tracing::error!(key_id = %rejected.key_id, reason = %rejected.reason, "the enclave refused a record from the shared store");
        }
        brought.added += result.loaded;
        brought.updated += result.updated;
        brought.rejected += result.rejected.len();
        followed.revision = last;
    }
}
