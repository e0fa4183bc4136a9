//! Stock gRPC tooling works: health checking (which follows the host's attestation check of its
//! enclave) and server reflection (v1 and v1alpha).

use signer_client::pb;
use tests::Stack;
use tokio_stream::StreamExt as _;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_serve_stock_clients() {
    let stack = Stack::start("k256").await;
    let channel = signer_proto::transport::dial(&stack.address, Default::default()).unwrap();

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    // The host's own attestation check of its enclave (the binary's PCR0, the development
    // root) passed too.
    for service in [
        "",
        "signer.v1.SignerService",
        "signer.v1.EnclaveAttestation",
    ] {
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            reply.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }

    // v1alpha, which older tools speak, lists the same services.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let Some(Ok(reply)) = replies.next().await else {
            panic!("no v1alpha reflection reply")
        };
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected v1alpha reply")
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"signer.v1.SignerService".to_owned()),
            "{names:?}"
        );
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(reply)) = replies.next().await else {
        panic!("no reflection reply")
    };
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"signer.v1.SignerService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    // The internal enclave API is not offered on the public port.
    let mut raw = pb::enclave_service_client::EnclaveServiceClient::new(
        signer_proto::transport::dial(&stack.address, Default::default()).unwrap(),
    );
    let status = raw.status(pb::StatusRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestation_verifies_against_the_development_root_and_the_enclave_binary() {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use signer_client::Error;
    use signer_client::attestation::{AttestationPolicy, TrustAnchor};

    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let binary = std::fs::read(tests::bin_dir().join("signer-enclave")).unwrap();
    let pcr0 = <sha2::Sha384 as sha2::Digest>::digest(&binary).to_vec();
    let root = std::fs::read(stack.dir.path().join("dev-root.der")).unwrap();
    let policy = AttestationPolicy {
        root: TrustAnchor::development(root),
        allowed_pcrs: vec![BTreeMap::from([(0, pcr0)])],
        expected_nonce: None,
        max_age: Duration::from_secs(60),
    };
    let attested = client.attest(&policy).await.unwrap();
    assert_eq!(attested.document.nonce.map(|n| n.len()), Some(32));
    // The configuration came with it, matching the attested hash: the stack's deployment and
    // its one keyring creator.
    assert_eq!(attested.identity.deployment_id, stack.deployment_id);
    let creators = attested.identity.config.keyring_creators.unwrap();
    assert_eq!(creators.admins, vec![stack.admin_key().public()]);
    assert!(attested.identity.boot_time_ms > 0);

    // The same enclave fails a production verifier, and a verifier expecting another image.
    let production = AttestationPolicy {
        root: TrustAnchor::aws_nitro_g1(),
        ..policy.clone()
    };
    assert!(matches!(
        client.attest(&production).await,
        Err(Error::Attestation(_))
    ));
    let other_image = AttestationPolicy {
        allowed_pcrs: vec![BTreeMap::from([(0, vec![0x11; 48])])],
        ..policy
    };
    assert!(matches!(
        client.attest(&other_image).await,
        Err(Error::Attestation("PCRs match no allowed set"))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_the_enclave_attests_to_another_image() {
    use tests::StackOptions;
    use tonic_health::pb::health_check_response::ServingStatus;

    // The host expects an image the enclave is not.
    let options = StackOptions {
        expected_pcr0: Some("00".repeat(48)),
        ..StackOptions::default()
    };
    let stack = tokio::task::block_in_place(|| {
        Stack::spawn(tempfile::tempdir().unwrap(), "k256", &options)
    });
    let channel = signer_proto::transport::dial(&stack.address, Default::default()).unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    // The host's own attestation check reports on its own service name: unknown until the first
    // check, then refused.
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "signer.v1.EnclaveAttestation".into(),
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(tests::READY_TIMEOUT, async {
        loop {
            let status = watch.message().await.unwrap().unwrap().status();
            match status {
                ServingStatus::NotServing => break,
                ServingStatus::ServiceUnknown | ServingStatus::Unknown => {}
                ServingStatus::Serving => panic!("another image's attestation was accepted"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no attestation verdict; log:\n{}", stack.log()));
    // The enclave itself is up and serving (a client that attests it correctly works through
    // this host), but the host does not report SERVING for it.
    let client = stack.client().await;
    client.create_key(&stack.keyring(), "k").await.unwrap();
    for service in ["", "signer.v1.SignerService"] {
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::NotServing, "{service:?}");
    }
    let log = stack.log();
    assert!(log.contains("enclave attestation refused"), "{log}");
    assert!(log.contains("PCRs match no allowed set"), "{log}");
}
