//! Logs an operator can follow a call through: with `SIGNER_LOG_FORMAT=json` both processes
//! write JSON lines, and a call's request id — the client's, or one the host makes and answers
//! with — is on the host's lines and the enclave's lines for that call.

use signer_client::pb;
use tests::{Stack, StackOptions};

/// The `target`s of the JSON log lines that carry `request_id`.
fn targets_with(log: &str, request_id: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| {
            entry
                .to_string()
                .contains(&format!("\"request_id\":\"{request_id}\""))
        })
        .map(|entry| entry["target"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_id_runs_through_the_hosts_and_the_enclaves_json_logs() {
    let options = StackOptions {
        json_logs: true,
        ..StackOptions::default()
    };
    let stack = Stack::start_with(tempfile::tempdir().unwrap(), &options).await;
    let client = stack.client().await;
    let key = client.create_key(&stack.keyring(), "traced").await.unwrap();
    let refused = |id: Option<&str>| {
        let body = client
            .body(pb::request_body::Operation::Sign(pb::SignBody {
                key_id: key.key_id.clone(),
                scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
                payload: vec![1; 32],
                path: Vec::new(),
            }))
            .unwrap();
        // Stamped by nobody: refused by the enclave, which logs why.
        let mut request = tonic::Request::new(stack.stamped(body, &[]));
        if let Some(id) = id {
            request
                .metadata_mut()
                .insert("x-request-id", id.parse().unwrap());
        }
        let client = client.clone();
        async move { client.raw().sign(request).await.unwrap_err() }
    };

    // The client's own id comes back and is on both processes' lines.
    let status = refused(Some("trace-me-42")).await;
    assert_eq!(
        status.metadata().get("x-request-id").unwrap(),
        "trace-me-42"
    );
    let log = stack.log();
    let targets = targets_with(&log, "trace-me-42");
    assert!(
        targets.iter().any(|t| t.starts_with("signer_host")),
        "{targets:?}\n{log}"
    );
    assert!(
        targets.iter().any(|t| t.starts_with("signer_enclave")),
        "{targets:?}\n{log}"
    );

    // Without one (or with one that is not a plain short token), the host makes one.
    for sent in [None, Some("has spaces")] {
        let status = refused(sent).await;
        let made = status
            .metadata()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(made.len(), 32, "{made}");
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
        assert!(!targets_with(&stack.log(), &made).is_empty());
    }
    // Every line is JSON.
    for line in stack.log().lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}
