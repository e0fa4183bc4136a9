//! The host's own check of the enclave it serves, for its health report: an attestation
//! document for a fresh nonce, verified (pinned root, chain, COSE signature, PCR0 allow-list,
//! nonce, age) by `signer-attestation`. The host is not trusted by clients — they attest the
//! enclave themselves — but an operator's load balancer should not send traffic to a host whose
//! enclave is not the measured image, or whose attestation has gone stale: health reports
//! NOT_SERVING then.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use signer_attestation::{AttestationPolicy, TrustAnchor};
use signer_proto::pb;
use signer_proto::pb::enclave_service_client::EnclaveServiceClient;
use tonic::transport::Channel;

/// How long the enclave has to answer `Attest`.
const ATTEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the chain must start.
#[derive(Clone, Debug)]
pub enum Root {
    /// The AWS Nitro Enclaves root G1: production.
    AwsNitroG1,
    /// A development root certificate in this file (the development attestor writes it when the
    /// enclave starts, so it is read at every check).
    DevelopmentFile(PathBuf),
}

/// What the enclave must attest to, and how fresh the last verification must be.
#[derive(Clone, Debug)]
pub struct Expectation {
    /// The pinned root.
    pub root: Root,
    /// Allowed PCR0 values (SHA-384 of the image), 48 bytes each.
    pub allowed_pcr0: Vec<Vec<u8>>,
    /// Health is NOT_SERVING once the last verified document is older than this; the host
    /// re-attests at a third of it.
    pub max_age: Duration,
}

/// The outcome of the checks so far, for one enclave boot.
#[derive(Debug, Default)]
pub struct Attested {
    /// The boot last verified, and when (host clock).
    verified: Option<(Vec<u8>, Instant)>,
}

impl Attested {
    /// Whether `boot_id` was verified within `max_age`.
    pub fn fresh(&self, boot_id: &[u8], max_age: Duration) -> bool {
        self.verified
            .as_ref()
            .is_some_and(|(boot, at)| boot == boot_id && at.elapsed() <= max_age)
    }

    /// Whether it is time to attest `boot_id` again (a new boot, or a third of `max_age` gone).
    pub fn due(&self, boot_id: &[u8], max_age: Duration) -> bool {
        !self.fresh(boot_id, max_age / 3)
    }

    /// Attests the enclave and records the outcome for `boot_id`; the verified document.
    ///
    /// # Errors
    /// Why the enclave's document was not accepted (the verifier's first failed check, or the
    /// call's failure).
    pub async fn check(
        &mut self,
        enclave: &EnclaveServiceClient<Channel>,
        expectation: &Expectation,
        boot_id: &[u8],
    ) -> Result<Vec<u8>, String> {
        let root = match &expectation.root {
            Root::AwsNitroG1 => TrustAnchor::aws_nitro_g1(),
            Root::DevelopmentFile(path) => std::fs::read(path)
                .ok()
                .and_then(|bytes| TrustAnchor::development_from_der_or_pem(&bytes))
                .ok_or_else(|| format!("no development root at {}", path.display()))?,
        };
        let mut nonce = vec![0u8; 32];
        getrandom::fill(&mut nonce).map_err(|e| format!("OS RNG: {e}"))?;
        let mut enclave = enclave.clone();
        let call = enclave.attest(pb::AttestRequest {
            nonce: nonce.clone(),
        });
        // The loader's channel has no per-call deadline; an enclave that hangs here must not
        // hang the loader.
        let document = tokio::time::timeout(ATTEST_TIMEOUT, call)
            .await
            .map_err(|_| "Attest timed out".to_owned())?
            .map_err(|status| format!("Attest failed: {}", status.code()))?
            .into_inner()
            .document;
        let policy = AttestationPolicy {
            root,
            allowed_pcrs: expectation
                .allowed_pcr0
                .iter()
                .map(|pcr0| BTreeMap::from([(0, pcr0.clone())]))
                .collect(),
            expected_nonce: Some(nonce),
            max_age: expectation.max_age,
        };
        signer_attestation::verify(&document, &policy, SystemTime::now())
            .map_err(|error| error.to_string())?;
        self.verified = Some((boot_id.to_vec(), Instant::now()));
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_is_per_boot_and_bounded_by_age() {
        let mut attested = Attested::default();
        let age = Duration::from_secs(300);
        assert!(!attested.fresh(b"boot-1", age));
        assert!(attested.due(b"boot-1", age));
        attested.verified = Some((b"boot-1".to_vec(), Instant::now()));
        assert!(attested.fresh(b"boot-1", age));
        assert!(!attested.due(b"boot-1", age));
        // Another boot (a restarted enclave) is not vouched for by the old document.
        assert!(!attested.fresh(b"boot-2", age));
        assert!(attested.due(b"boot-2", age));
    }
}
