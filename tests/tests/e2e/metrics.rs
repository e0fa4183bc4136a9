//! The host's Prometheus endpoint, scraped over HTTP and read with a Prometheus text-format
//! parser: calls counted by method and status code as they are made, enclave round trips timed,
//! and the enclave's lifecycle followed across a restart.

use std::collections::HashMap;

use prometheus_parse::{Scrape, Value};
use signer_client::{Error, pb};
use tests::{Stack, StackOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// One scrape: `name{label="v",…}` (labels sorted) → value.
async fn scrape(stack: &Stack) -> HashMap<String, f64> {
    let address = stack.metrics.unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase().contains("content-type: text/plain"),
        "{head}"
    );
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .into_iter()
        .map(|sample| {
            let mut labels: Vec<_> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            labels.sort();
            let name = if labels.is_empty() {
                sample.metric
            } else {
                format!("{}{{{}}}", sample.metric, labels.join(","))
            };
            let value = match sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                Value::Histogram(_) | Value::Summary(_) => f64::NAN,
            };
            (name, value)
        })
        .collect()
}

fn get(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    *metrics.get(name).unwrap_or_else(|| {
        panic!(
            "{name} not scraped: {:?}",
            metrics.keys().collect::<Vec<_>>()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_by_method_and_code_and_follow_the_enclave() {
    let options = StackOptions {
        metrics: true,
        ..StackOptions::default()
    };
    let stack = Stack::start_with(tempfile::tempdir().unwrap(), &options).await;
    let client = stack.client().await;
    let key = client
        .create_key(&stack.keyring(), "metered")
        .await
        .unwrap();
    let before = scrape(&stack).await;
    assert_eq!(get(&before, "signer_enclave_phase"), 2.0);
    assert_eq!(get(&before, "signer_enclave_boots_total"), 1.0);
    assert_eq!(get(&before, "signer_requests_in_flight"), 0.0);
    let signed_ok = r#"signer_requests_total{code="OK",method="Sign"}"#;
    let sign_ok_before = before.get(signed_ok).copied().unwrap_or(0.0);

    // Three signatures; a key that does not exist (the SDK's lookup is refused); a Sign
    // stamped by nobody.
    for i in 0..3u8 {
        client.sign_digest(&key.key_id, [i + 1; 32]).await.unwrap();
    }
    let missing = "k-00000000000000000000000000000000";
    assert!(matches!(
        client.sign_digest(missing, [1; 32]).await,
        Err(Error::Status(_))
    ));
    let body = client
        .body(pb::request_body::Operation::Sign(pb::SignBody {
            key_id: key.key_id.clone(),
            scheme: pb::SignatureScheme::EcdsaSecp256k1.into(),
            payload: vec![1; 32],
            path: Vec::new(),
        }))
        .unwrap();
    let refused = client
        .raw()
        .sign(stack.stamped(body, &[]))
        .await
        .unwrap_err();
    let after = scrape(&stack).await;
    assert_eq!(get(&after, signed_ok) - sign_ok_before, 3.0);
    assert_eq!(
        get(
            &after,
            r#"signer_requests_total{code="NOT_FOUND",method="GetPublicKey"}"#
        ),
        1.0
    );
    // The refused Sign is counted under its own code, once.
    let code = format!("{:?}", refused.code()).to_uppercase();
    let refusals: Vec<_> = after
        .iter()
        .filter(|(name, _)| {
            name.starts_with("signer_requests_total{")
                && name.contains(r#"method="Sign""#)
                && !name.contains(r#"code="OK""#)
        })
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(*refusals[0].1, 1.0, "{refusals:?}");
    assert!(
        refusals[0].0.replace('_', "").contains(&code),
        "{refusals:?} for {code}"
    );
    assert!(get(&after, r#"signer_request_seconds_count{method="Sign"}"#) >= 4.0);
    assert!(
        get(
            &after,
            r#"signer_enclave_call_seconds_count{method="Sign"}"#
        ) >= 4.0
    );
    assert_eq!(
        get(&after, r#"signer_enclave_loads_total{outcome="ok"}"#),
        1.0
    );
    // Nothing in the exposition names a key.
    assert!(!after.keys().any(|name| name.contains(&key.key_id)));

    // The enclave dies and the host restarts and reloads it: a second boot, ready again, with
    // the keyring and the key it loaded.
    stack.kill_enclave();
    let fresh = stack.client().await;
    fresh.sign_digest(&key.key_id, [9; 32]).await.unwrap();
    let restarted = scrape(&stack).await;
    assert_eq!(get(&restarted, "signer_enclave_boots_total"), 2.0);
    assert_eq!(get(&restarted, "signer_enclave_phase"), 2.0);
    assert_eq!(
        get(&restarted, r#"signer_enclave_loads_total{outcome="ok"}"#),
        2.0
    );
    assert_eq!(get(&restarted, "signer_enclave_keyrings"), 1.0);
    assert_eq!(get(&restarted, "signer_enclave_keys"), 1.0);
    // The reloaded key's public key was checked against its record before that signature; the
    // status poll (every 500 ms) reports it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while get(&scrape(&stack).await, "signer_enclave_keys_checked") < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "keys_checked never reached 1"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
