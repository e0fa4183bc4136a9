//! TLS and mutual TLS on the public API (defence in depth on the host).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use signer_client::{Client, ClientConfig, ClientTls};
use tests::{Stack, StackOptions};

pub(crate) struct Pki {
    pub(crate) ca: String,
    pub(crate) server: (String, String),
    pub(crate) client: (String, String),
    /// A second client of the same CA.
    pub(crate) second_client: (String, String),
    other_ca: String,
    stranger: (String, String),
}

fn authority() -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    (pem, Issuer::new(params, key))
}

fn leaf(names: &[&str], issuer: &Issuer<'_, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, issuer)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

pub(crate) fn pki() -> Pki {
    let (ca, issuer) = authority();
    let (other_ca, other_issuer) = authority();
    Pki {
        server: leaf(&["localhost"], &issuer),
        client: leaf(&["exchange-backend"], &issuer),
        second_client: leaf(&["custody-backend"], &issuer),
        stranger: leaf(&["stranger"], &other_issuer),
        ca,
        other_ca,
    }
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) async fn client(stack: &Stack, ca: &str, identity: Option<&(String, String)>) -> Client {
    let mut config = ClientConfig::new(stack.address.clone(), stack.deployment_id.clone());
    config.retry.max_attempts = 1;
    config.stamper = Some(std::sync::Arc::new(stack.admin_stamper()));
    config.enclave = Some(stack.attestation_policy());
    config.tls = Some(ClientTls {
        ca_pem: ca.as_bytes().to_vec(),
        domain: "localhost".into(),
        identity: identity.map(|(cert, key)| (cert.as_bytes().to_vec(), key.as_bytes().to_vec())),
    });
    Client::connect(config).await.unwrap()
}

/// The host's TLS files for mutual TLS with `pki` (server certificate, key, client CA), written
/// into `dir`: `StackOptions::tls`.
pub(crate) fn mutual_tls(dir: &Path, pki: &Pki) -> (PathBuf, PathBuf, Option<PathBuf>) {
    (
        write(dir, "server.pem", &pki.server.0),
        write(dir, "server.key", &pki.server.1),
        Some(write(dir, "clients-ca.pem", &pki.ca)),
    )
}

/// Waits until `stack` is SERVING, asking its health service over mutual TLS as `pki.client`.
pub(crate) async fn wait_serving(stack: &Stack, pki: &Pki) {
    let health_tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&pki.ca))
        .domain_name("localhost")
        .identity(tonic::transport::Identity::from_pem(
            &pki.client.0,
            &pki.client.1,
        ));
    let channel =
        signer_proto::transport::dial_with(&stack.address, Default::default(), Some(health_tls))
            .unwrap();
    tokio::time::timeout(tests::READY_TIMEOUT, tests::wait_serving_on(channel))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_of_the_configured_ca() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let tls = mutual_tls(files.path(), &pki);
    let stack = tokio::task::block_in_place(|| {
        Stack::spawn(
            dir,
            "k256",
            &StackOptions {
                tls: Some(tls),
                ..StackOptions::default()
            },
        )
    });
    let admitted = client(&stack, &pki.ca, Some(&pki.client)).await;
    // Wait for SERVING over TLS, then use the API.
    wait_serving(&stack, &pki).await;
    let keyring = admitted
        .create_keyring(vec![stack.admin_key().public()], 1)
        .await
        .unwrap();
    let key = admitted.create_key(&keyring, "over mTLS").await.unwrap();
    admitted.sign_digest(&key.key_id, [2; 32]).await.unwrap();

    // Refused: plaintext, TLS without a client certificate, a certificate from another CA, and a
    // client that does not trust the server's CA.
    let mut plain = ClientConfig::new(stack.address.clone(), stack.deployment_id.clone());
    plain.retry.max_attempts = 1;
    let plaintext = Client::connect(plain).await.unwrap();
    assert!(plaintext.list_keys(10, "").await.is_err());
    assert!(
        client(&stack, &pki.ca, None)
            .await
            .list_keys(10, "")
            .await
            .is_err()
    );
    assert!(
        client(&stack, &pki.ca, Some(&pki.stranger))
            .await
            .list_keys(10, "")
            .await
            .is_err()
    );
    assert!(
        client(&stack, &pki.other_ca, Some(&pki.client))
            .await
            .list_keys(10, "")
            .await
            .is_err()
    );
    // And the admitted client still works.
    assert_eq!(admitted.list_keys(10, "").await.unwrap().0.len(), 1);
}
