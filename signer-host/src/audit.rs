//! Collects the enclave's audit trail into the store: reads the entries the enclave holds,
//! stores them, and only then asks for the next ones, which tells the enclave it may free the
//! stored ones. An entry is lost only if the enclave dies before the host collected it (the
//! loader collects at every poll, 500 ms by default).

use std::sync::Arc;

use signer_proto::pb;
use signer_proto::pb::enclave_service_client::EnclaveServiceClient;
use tonic::transport::Channel;

use crate::Error;
use crate::store::{KeyStore, StoredAudit, blocking};

/// Entries asked for per call.
const PAGE: u32 = 1_000;

/// How far this host has stored one boot's chain.
#[derive(Debug, Default)]
pub struct Collected {
    boot_id: Vec<u8>,
    last: Option<u64>,
}

/// Stores every entry the enclave holds; returns how many were new to this host.
///
/// # Errors
/// Enclave or store failures; the next call starts where this one stopped.
pub async fn collect(
    enclave: &EnclaveServiceClient<Channel>,
    store: &Arc<dyn KeyStore>,
    collected: &mut Collected,
    boot_id: &[u8],
) -> Result<usize, Error> {
    if collected.boot_id != boot_id {
        *collected = Collected {
            boot_id: boot_id.to_vec(),
            last: None,
        };
    }
    let mut enclave = enclave.clone();
    let mut total = 0;
    loop {
        let entries = enclave
            .read_audit(pb::ReadAuditRequest {
                after_sequence: collected.last,
                limit: PAGE,
            })
            .await
            .map_err(Box::new)?
            .into_inner()
            .entries;
        let stored: Vec<StoredAudit> = entries
            .into_iter()
            .filter_map(StoredAudit::from_signed)
            .filter(|entry| entry.boot_id == boot_id)
            .collect();
        let Some(last) = stored.last().map(|entry| entry.sequence) else {
            return Ok(total);
        };
        if collected.last.is_some_and(|seen| last <= seen) {
            return Ok(total); // nothing newer: never move backwards
        }
        total += stored.len();
        let store = Arc::clone(store);
        blocking(move || store.append_audit(&stored)).await?;
        collected.last = Some(last);
    }
}
