//! Keyring keys through KMS with attestation, against the KMS-API test server: only the enclave
//! image the key policy names can unwrap, and a restart unseals through KMS.

use std::path::Path;
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use signer_client::{Client, ClientConfig, Error, RetryPolicy};
use tests::{KmsServer, Stack, StackOptions};
use tonic::Code;

const REGION: &str = "eu-central-1";

pub(crate) fn kms_client(endpoint: &str) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::from_keys(
            "test-access-key",
            "test-secret-key",
            None,
        ))
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

pub(crate) fn pcr0_of(binary: &Path) -> String {
    let bytes = std::fs::read(binary).unwrap();
    hex::encode(<sha2::Sha384 as sha2::Digest>::digest(&bytes))
}

/// A KMS key whose policy lets only an enclave with `pcr0` decrypt or generate data keys; its
/// ARN.
pub(crate) async fn key_for(kms: &aws_sdk_kms::Client, pcr0: &str) -> String {
    let metadata = kms.create_key().send().await.unwrap().key_metadata.unwrap();
    let (key_id, arn) = (metadata.key_id, metadata.arn.unwrap());
    // The key policy `signer-cli kms-policy` writes for this enclave's PCR0 (the same as
    // deploy/kms/key-policy.json: tests/tests/deploy.rs). The test server does not model
    // principals.
    let output = std::process::Command::new(tests::bin_dir().join("signer-cli"))
        .args(["kms-policy", "--pcr0", pcr0])
        .args([
            "--key-admin-role",
            "arn:aws:iam::123456789012:role/signer-admin",
        ])
        .args([
            "--instance-role",
            "arn:aws:iam::123456789012:role/signer-instance",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let policy = String::from_utf8(output.stdout).unwrap();
    kms.put_key_policy()
        .key_id(&key_id)
        .policy_name("default")
        .policy(policy)
        .send()
        .await
        .unwrap();
    arn
}

pub(crate) async fn start(dir: tempfile::TempDir, options: &StackOptions) -> Stack {
    let stack = tokio::task::block_in_place(|| Stack::spawn(dir, "k256", options));
    stack.wait_serving().await;
    stack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyrings_unwrap_through_kms_only_for_the_attested_image() {
    let dir = tempfile::tempdir().unwrap();
    let server = KmsServer::start(&dir.path().join("dev-root.der"));
    let kms = kms_client(&server.endpoint);
    let enclave = tests::bin_dir().join("signer-enclave");
    let key_arn = key_for(&kms, &pcr0_of(&enclave)).await;
    let options = StackOptions {
        kms: Some((server.endpoint.clone(), key_arn.clone())),
        ..StackOptions::default()
    };

    // First start: the keyring key comes from GenerateDataKey, for the attested enclave only.
    let stack = start(dir, &options).await;
    let client = stack.client().await;
    let wallet = client
        .create_key(&stack.keyring(), "through kms")
        .await
        .unwrap();
    let signature = client.sign_digest(&wallet.key_id, [4; 32]).await.unwrap();
    assert!(
        stack.log().contains("provider=\"aws-kms\""),
        "{}",
        stack.log()
    );

    // The host stores only KMS's CiphertextBlob. The host itself, holding the instance's
    // credentials, cannot decrypt it: the key policy demands an attested recipient.
    let db = rusqlite::Connection::open(stack.database()).unwrap();
    let (keyring_id, blob): (String, Vec<u8>) = db
        .query_row("SELECT keyring_id, wrapped_key FROM keyrings", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    drop(db);
    let direct = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob.clone()))
        .encryption_context("signer:keyring-id", &keyring_id)
        .send()
        .await;
    let error = direct.expect_err("a plain Decrypt must be refused");
    assert_eq!(
        aws_sdk_kms::error::ProvideErrorMetadata::code(&error.into_service_error()),
        Some("AccessDeniedException")
    );
    // Nor can it wrap a keyring key of its own choosing for the enclave to accept.
    let encrypt = kms
        .encrypt()
        .key_id(&key_arn)
        .plaintext(Blob::new(vec![7; 32]))
        .encryption_context("signer:keyring-id", &keyring_id)
        .send()
        .await
        .expect_err("Encrypt must be refused");
    assert_eq!(
        aws_sdk_kms::error::ProvideErrorMetadata::code(&encrypt.into_service_error()),
        Some("AccessDeniedException")
    );

    // A restart unseals through KMS Decrypt with a fresh attestation; the same key signs alike.
    stack.kill_enclave();
    let fresh = stack.client().await;
    assert_eq!(
        fresh.sign_digest(&wallet.key_id, [4; 32]).await.unwrap(),
        signature
    );
    let dir = stack.stop();

    // Another enclave image (one byte appended: another PCR0) is refused by KMS, stays not
    // ready, and says why.
    let other = dir.path().join("signer-enclave-other");
    let mut bytes = std::fs::read(&enclave).unwrap();
    bytes.push(0);
    std::fs::write(&other, &bytes).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert_ne!(pcr0_of(&other), pcr0_of(&enclave));
    let impostor = tokio::task::block_in_place(|| {
        Stack::spawn(
            dir,
            "k256",
            &StackOptions {
                enclave_binary: Some(other),
                ..options
            },
        )
    });
    let mut config = ClientConfig::new(impostor.address.clone(), impostor.deployment_id.clone());
    config.retry = RetryPolicy {
        max_attempts: 12,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
    };
    let patient = Client::connect(config).await.unwrap();
    match patient.sign_digest(&wallet.key_id, [4; 32]).await {
        Err(Error::Status(status)) => assert_eq!(status.code(), Code::Unavailable),
        other => panic!("an impostor enclave must not sign: {other:?}"),
    }
    let log = impostor.log();
    assert!(
        log.contains("attestation rejected by the key policy"),
        "{log}"
    );
    assert!(!log.contains("enclave loaded and ready"), "{log}");
}

/// A TCP relay to KMS that can be cut: while down it drops every connection.
pub(crate) struct Switch {
    pub(crate) up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub(crate) endpoint: String,
}

pub(crate) async fn switch_to(endpoint: &str) -> Switch {
    use std::sync::atomic::{AtomicBool, Ordering};
    let target: std::net::SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let up = std::sync::Arc::new(AtomicBool::new(true));
    let flag = std::sync::Arc::clone(&up);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !flag.load(Ordering::SeqCst) {
                continue; // dropped: the caller sees its connection closed
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Switch {
        up,
        endpoint: format!("http://{local}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_unreachable_is_unavailable_retried_with_backoff_and_nothing_is_lost() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let server = KmsServer::start(&dir.path().join("dev-root.der"));
    let kms = kms_client(&server.endpoint);
    let key_arn = key_for(&kms, &pcr0_of(&tests::bin_dir().join("signer-enclave"))).await;
    let switch = switch_to(&server.endpoint).await;
    let options = StackOptions {
        kms: Some((switch.endpoint.clone(), key_arn)),
        ..StackOptions::default()
    };
    let stack = start(dir, &options).await;
    let client = stack.client().await;
    let wallet = client
        .create_key(&stack.keyring(), "survives an outage")
        .await
        .unwrap();
    let signature = client.sign_digest(&wallet.key_id, [6; 32]).await.unwrap();

    // KMS goes away, then the enclave restarts: it cannot unwrap its keyring. The client's
    // retry budget (about 15 s) spans several of the host's attempts.
    switch.up.store(false, Ordering::SeqCst);
    stack.kill_enclave();
    let mut config = ClientConfig::new(stack.address.clone(), stack.deployment_id.clone());
    config.retry = RetryPolicy {
        max_attempts: 32,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
    };
    let patient = Client::connect(config).await.unwrap();
    match patient.sign_digest(&wallet.key_id, [6; 32]).await {
        Err(Error::Status(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("expected UNAVAILABLE while KMS is unreachable, got {other:?}"),
    }
    let log = stack.log();
    assert!(
        log.contains("KMS unreachable: is vsock-proxy (or the endpoint) up and reachable?"),
        "{log}"
    );
    // The host retries with growing waits rather than hammering KMS.
    assert!(
        log.contains("retry_in_ms=500") && log.contains("retry_in_ms=1000"),
        "{log}"
    );

    // KMS comes back: the host's next attempt loads everything; the same key signs alike.
    switch.up.store(true, Ordering::SeqCst);
    stack.wait_serving().await;
    assert_eq!(
        stack
            .client()
            .await
            .sign_digest(&wallet.key_id, [6; 32])
            .await
            .unwrap(),
        signature
    );
}
