//! `signer-cli assess` against running stacks: the local development stack fails the production
//! items, honestly; a stack configured as production would be (AWS KMS through the KMS-API test
//! server with the generated key policy, mutual TLS, an owner-only store, the deployment kit's
//! vsock-proxy allow-list) passes every item except the one that needs Nitro hardware.
//!
//! With `SIGNER_WRITE_ASSESSMENT_EXAMPLES=<dir>` the two reports are also written there (how
//! `deploy/assessment/` was made).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tests::{KmsServer, Stack, StackOptions};

use super::kms::{key_for, kms_client, pcr0_of};
use super::tls::{pki, write};

/// Runs `signer-cli [global…] assess [options…]` as an operator would, expecting `pcr0`; whether
/// it exited zero and the JSON report it wrote (Markdown beside it).
fn assess(
    stack: &Stack,
    pcr0: &str,
    (global, options): (&[String], &[String]),
    out: &Path,
    name: &str,
) -> (bool, Value) {
    let dir = stack.dir.path();
    let json = out.join(format!("{name}.json"));
    let status = Command::new(tests::bin_dir().join("signer-cli"))
        .arg(format!("--endpoint={}", stack.address))
        .arg(format!("--dev-root={}", dir.join("dev-root.der").display()))
        .arg(format!("--allow-pcr0={pcr0}"))
        .args(global)
        .arg("assess")
        .args(options)
        .arg(format!("--store={}", stack.database().display()))
        .arg(format!("--json={}", json.display()))
        .arg(format!(
            "--markdown={}",
            out.join(format!("{name}.md")).display()
        ))
        .output()
        .unwrap()
        .status;
    let report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (status.success(), report)
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn status(report: &Value, id: &str) -> String {
    statuses(report)
        .into_iter()
        .find(|(i, _)| i == id)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no item {id}: {report}"))
}

/// Where example reports go, if asked.
fn examples() -> Option<PathBuf> {
    std::env::var_os("SIGNER_WRITE_ASSESSMENT_EXAMPLES").map(PathBuf::from)
}

fn keep(out: &Path, name: &str) {
    if let Some(to) = examples() {
        for ext in ["md", "json"] {
            std::fs::copy(
                out.join(format!("{name}.{ext}")),
                to.join(format!("{name}.{ext}")),
            )
            .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_stack_fails_the_production_items() {
    let stack = Stack::start("k256").await;
    let _ = stack.client().await;
    let pcr0 = pcr0_of(&stack.enclave_binary);
    let out = tempfile::tempdir().unwrap();
    let (ok, report) = tokio::task::block_in_place(|| {
        assess(&stack, &pcr0, (&[], &[]), out.path(), "local-stack")
    });
    assert!(!ok, "a development stack must not assess clean");
    let expected = [
        ("attestation", "FAIL"), // the development attestor, not the Nitro root
        ("pcrs", "PASS"),        // it runs the binary it was asked to
        ("debug-mode", "PASS"),
        ("attestation-freshness", "PASS"),
        ("kms-policy-attestation", "WARN"), // no key policy: there is no KMS
        ("kms-policy-dangerous-actions", "WARN"),
        ("kms-policy-separation", "WARN"),
        ("enclave-kms-path", "FAIL"), // the local key-wrapping stand-in
        ("public-api-tls", "FAIL"),   // plaintext on loopback
        ("store-permissions", "PASS"),
    ];
    assert_eq!(
        statuses(&report),
        expected
            .iter()
            .map(|(i, s)| ((*i).to_owned(), (*s).to_owned()))
            .collect::<Vec<_>>(),
        "{report:#}"
    );
    let markdown = std::fs::read_to_string(out.path().join("local-stack.md")).unwrap();
    assert!(markdown.contains(&pcr0) && markdown.contains("**FAIL**"));
    keep(out.path(), "local-stack");

    // Another expected image: the measurements fail, and say which register.
    let (_, other) = tokio::task::block_in_place(|| {
        assess(&stack, &"00".repeat(48), (&[], &[]), out.path(), "other")
    });
    assert_eq!(status(&other, "pcrs"), "FAIL");
    // A store others can read fails.
    std::fs::set_permissions(stack.database(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, readable) =
        tokio::task::block_in_place(|| assess(&stack, &pcr0, (&[], &[]), out.path(), "readable"));
    assert_eq!(status(&readable, "store-permissions"), "FAIL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_configured_stack_passes_all_but_the_hardware() {
    let dir = tempfile::tempdir().unwrap();
    let server = KmsServer::start(&dir.path().join("dev-root.der"));
    let kms = kms_client(&server.endpoint);
    let enclave = tests::bin_dir().join("signer-enclave");
    let pcr0 = pcr0_of(&enclave);
    let key_arn = key_for(&kms, &pcr0).await;
    let files = tempfile::tempdir().unwrap();
    let pki = pki();
    let options = StackOptions {
        kms: Some((server.endpoint.clone(), key_arn.clone())),
        tls: Some(super::tls::mutual_tls(files.path(), &pki)),
        ..StackOptions::default()
    };
    let stack = tokio::task::block_in_place(|| Stack::spawn(dir, "k256", &options));

    // The policy as KMS holds it (`aws kms get-key-policy`).
    let policy = kms
        .get_key_policy()
        .key_id(&key_arn)
        .policy_name("default")
        .send()
        .await
        .unwrap()
        .policy
        .unwrap();
    let policy_file = write(files.path(), "key-policy.json", &policy);
    let global = vec![
        format!(
            "--tls-ca={}",
            write(files.path(), "ca.pem", &pki.ca).display()
        ),
        format!(
            "--tls-cert={}",
            write(files.path(), "client.pem", &pki.client.0).display()
        ),
        format!(
            "--tls-key={}",
            write(files.path(), "client.key", &pki.client.1).display()
        ),
        "--tls-domain=localhost".into(),
    ];
    // The kit's allow-list, for the key's region as the deploy README says to set it.
    let kit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nitro/vsock-proxy.yaml"),
    )
    .unwrap();
    assert!(kit.contains("kms.eu-west-1.amazonaws.com"));
    let region = key_arn.split(':').nth(3).unwrap();
    let vsock_proxy = write(
        files.path(),
        "vsock-proxy.yaml",
        &kit.replace("eu-west-1", region),
    );
    let options = vec![
        format!("--key-policy={}", policy_file.display()),
        format!("--vsock-proxy-config={}", vsock_proxy.display()),
    ];
    // SERVING over mutual TLS: the enclave unwrapped its keyring key through KMS at boot.
    super::tls::wait_serving(&stack, &pki).await;

    assert_eq!(
        std::fs::metadata(stack.database())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600,
        "the host creates its store owner-only"
    );
    let out = tempfile::tempdir().unwrap();
    let (ok, report) = tokio::task::block_in_place(|| {
        assess(
            &stack,
            &pcr0,
            (&global, &options),
            out.path(),
            "production-like-stack",
        )
    });
    assert!(
        !ok,
        "the attestation item needs Nitro hardware and fails here"
    );
    for (id, verdict) in statuses(&report) {
        let want = if id == "attestation" { "FAIL" } else { "PASS" };
        assert_eq!(verdict, want, "{id}: {report:#}");
    }
    keep(out.path(), "production-like-stack");

    // The same deployment with the attestation condition taken out of the key policy.
    let mut weakened: Value = serde_json::from_str(&policy).unwrap();
    weakened["Statement"][1]
        .as_object_mut()
        .unwrap()
        .remove("Condition");
    let weakened_file = write(files.path(), "weakened.json", &weakened.to_string());
    let other_region = write(
        files.path(),
        "other-region.yaml",
        &kit.replace("eu-west-1", "us-east-1"),
    );
    let options = vec![
        format!("--key-policy={}", weakened_file.display()),
        format!("--vsock-proxy-config={}", other_region.display()),
    ];
    let (_, report) = tokio::task::block_in_place(|| {
        assess(&stack, &pcr0, (&global, &options), out.path(), "weakened")
    });
    assert_eq!(status(&report, "kms-policy-attestation"), "FAIL");
    // An allow-list for another region's KMS than the key's: the enclave could not unwrap.
    assert_eq!(status(&report, "enclave-kms-path"), "FAIL");
}
