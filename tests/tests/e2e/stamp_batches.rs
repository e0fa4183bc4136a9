//! Stamps verified in batches: under concurrent load the enclave checks the Ed25519 stamps of
//! requests that arrive together in one batch. A host that edits stamps or bodies in the middle
//! of such a wave gets exactly those requests refused; every honest one signs, correctly.

use signer_client::pb;
use signer_client::pb::enclave_service_client::EnclaveServiceClient;
use tests::Stack;
use tonic::Code;

use super::hostile::sign_body;

/// Concurrent requests per wave, one in four edited.
const WAVE: u8 = 48;

/// Requests whose stamps the enclave has verified in a batch since it started, and the batches
/// that failed (an edited stamp in them) and were verified again one by one.
async fn batched(enclave: &EnclaveServiceClient<tonic::transport::Channel>) -> (u64, u64) {
    let status = enclave.clone().status(pb::StatusRequest {}).await.unwrap();
    let status = status.into_inner();
    (status.stamps_batched, status.stamp_batches_failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_requests_in_a_batched_wave_are_refused_alone() {
    let stack = Stack::start("k256").await;
    let admin = stack.client().await;
    let key = admin.create_key(&stack.keyring(), "waves").await.unwrap();
    let approver = stack.admin_key();
    // The enclave's own status, over its socket (as its host reads it).
    let enclave = stack.enclave_client();
    for wave in 1u8.. {
        let before = batched(&enclave).await;
        let requests: Vec<([u8; 32], Code, pb::SignedRequest)> = (0..WAVE)
            .map(|i| {
                let mut digest = [7; 32];
                digest[..2].copy_from_slice(&[wave, i]);
                let mut request =
                    stack.stamped(sign_body(&admin, &key.key_id, digest), &[&approver]);
                match i % 4 {
                    // A flipped bit in the stamp's signature.
                    1 => request.stamps[0].signature[9] ^= 1,
                    // Another (well-formed) body under the stamp.
                    3 => request.body = sign_body(&admin, &key.key_id, [0xee; 32]),
                    _ => return (digest, Code::Ok, request),
                }
                (digest, Code::Unauthenticated, request)
            })
            .collect();
        // All in flight at once: one task per request.
        let answers: Vec<_> = requests
            .iter()
            .map(|(_, _, request)| {
                let (mut raw, request) = (admin.raw(), request.clone());
                tokio::spawn(async move { raw.sign(request).await })
            })
            .collect();
        for ((digest, expected, _), answer) in requests.iter().zip(answers) {
            match answer.await.unwrap() {
                Ok(response) => {
                    assert_eq!(*expected, Code::Ok, "an edited request signed");
                    let signature = response.into_inner().signature;
                    let (r, s) = signature.split_at(32);
                    assert!(tests::ecdsa_verifies(
                        &key,
                        digest,
                        r.try_into().unwrap(),
                        s.try_into().unwrap()
                    ));
                }
                Err(status) => assert_eq!(status.code(), *expected, "{status:?}"),
            }
        }
        // Done once some wave was batched with an edited request in it: that batch failed,
        // was checked again one by one, and the status says so.
        let after = batched(&enclave).await;
        if after.0 > before.0 && after.1 > before.1 {
            return;
        }
        assert!(
            wave < 20,
            "20 waves of {WAVE} concurrent requests, and never a failed batch: {after:?}"
        );
    }
}
