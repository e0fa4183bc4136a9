//! Verdicts of the assessment on a real AWS-signed attestation document (testdata/fixtures),
//! and what flips them: a changed PCR, a policy without the attestation condition, a stale
//! document, a debug enclave, plaintext, a readable store.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::assess::{
    AttestationEvidence, Observations, Status, StoreObservation, Transport, assess,
};
use super::key_policy::{KeyPolicyRequest, analyse, key_policy};

const DOCUMENT: &[u8] = include_bytes!(
    "../../../testdata/fixtures/nitro-attestation/attestation_eu-central-1_20250106.cose"
);
/// The document's timestamp (ms).
const SIGNED_MS: u64 = 1_736_179_625_472;
const PCR0: &str = "8bb159f202bb95d6d4d98e0e103918246cea734f1d57cd263e4fd56075ed53f6fa8c68854817a32749a241e11874c26b";
const PCR1: &str = "3b4a7e1b5f13c5a1000b3ed32ef8995ee13e9876329f9bc72650b918329ef9cf4e2e4d1e1e37375dab0ba56ba0974d03";
const PCR2: &str = "f4e86b12ad3df5f9fea962ff706c23ee190b463740a32f1a679a3cd1070a7731ddd83328fe3db5e8143ea94344b6fb95";
const ADMIN: &str = "arn:aws:iam::123456789012:role/signer-admin";
const INSTANCE: &str = "arn:aws:iam::123456789012:role/signer-instance";

fn policy_for(pcr0: &str) -> Value {
    key_policy(&KeyPolicyRequest {
        admin_role: ADMIN.into(),
        instance_role: INSTANCE.into(),
        pcrs: BTreeMap::from([(0, vec![pcr0.into()])]),
    })
    .unwrap()
}

/// What a production deployment running the fixture's image would show, 2 s after signing.
fn production() -> Observations {
    Observations {
        endpoint: "tls://signer.example:443".into(),
        now: UNIX_EPOCH + Duration::from_millis(SIGNED_MS + 2_000),
        expected: vec![
            [(0u16, PCR0), (1, PCR1), (2, PCR2)]
                .into_iter()
                .map(|(i, v)| (i, hex::decode(v).unwrap()))
                .collect(),
        ],
        // Recorded without a nonce (the fixture has none).
        attestation: Ok(AttestationEvidence {
            document: DOCUMENT.to_vec(),
            config: Vec::new(),
            nonce: Vec::new(),
        }),
        development_root: None,
        max_age: Duration::from_secs(300),
        key_policy: Some(policy_for(PCR0)),
        transport: Transport::MutualTls,
        store: Some(StoreObservation::Sqlite {
            file_mode: 0o100_600,
            dir_mode: 0o40_700,
        }),
        vsock_proxy_allowlist: Some(
            "allowlist:\n- {address: kms.eu-central-1.amazonaws.com, port: 443}\n".into(),
        ),
    }
}

#[test]
fn a_genuine_document_passes_every_item_it_can_show() {
    let report = assess(&production());
    for id in [
        "attestation",
        "pcrs",
        "debug-mode",
        "attestation-freshness",
        "kms-policy-attestation",
        "kms-policy-dangerous-actions",
        "kms-policy-separation",
        "public-api-tls",
        "store-permissions",
    ] {
        assert_eq!(report.status(id), Some(Status::Pass), "{id}: {report:#?}");
    }
    // The fixture's enclave is not this product: it carries no identity, so its configuration
    // (and with it the KMS path) cannot be shown.
    assert_eq!(report.status("enclave-kms-path"), Some(Status::Fail));
    assert!(
        report
            .pcrs
            .iter()
            .filter(|r| r.register <= 2)
            .all(|r| r.matches)
    );
    let markdown = report.markdown();
    assert!(
        markdown.contains(PCR0) && markdown.contains("| 0 |"),
        "{markdown}"
    );
}

#[test]
fn a_changed_pcr_fails_the_measurements_only() {
    let mut o = production();
    o.expected[0].insert(2, vec![7u8; 48]);
    let report = assess(&o);
    assert_eq!(report.status("pcrs"), Some(Status::Fail));
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.id == "pcrs" && c.reason.contains("PCR2"))
    );
    assert_eq!(
        report.status("attestation"),
        Some(Status::Pass),
        "the document is genuine"
    );
    let row = report.pcrs.iter().find(|r| r.register == 2).unwrap();
    assert!(!row.matches && row.attested.as_deref() == Some(PCR2));
}

#[test]
fn a_stale_or_future_document_fails_freshness() {
    let mut o = production();
    o.now = UNIX_EPOCH + Duration::from_millis(SIGNED_MS + 301_000);
    assert_eq!(
        assess(&o).status("attestation-freshness"),
        Some(Status::Fail)
    );
    o.now = UNIX_EPOCH + Duration::from_millis(SIGNED_MS - 61_000);
    assert_eq!(
        assess(&o).status("attestation-freshness"),
        Some(Status::Fail)
    );
    // Evidence fetched with a nonce the document does not carry: a replayed document.
    let mut o = production();
    if let Ok(e) = &mut o.attestation {
        e.nonce = vec![1; 32];
    }
    assert_eq!(
        assess(&o).status("attestation-freshness"),
        Some(Status::Fail)
    );
}

#[test]
fn an_edited_document_fails_attestation() {
    let mut o = production();
    let mut edited = DOCUMENT.to_vec();
    let at = edited.len() - 10; // inside the signature
    edited[at] ^= 1;
    o.attestation = Ok(AttestationEvidence {
        document: edited,
        config: Vec::new(),
        nonce: Vec::new(),
    });
    let report = assess(&o);
    assert_eq!(report.status("attestation"), Some(Status::Fail));
    assert_eq!(report.status("attestation-freshness"), Some(Status::Fail));
    o.attestation = Err("unavailable".into());
    let report = assess(&o);
    for id in ["attestation", "pcrs", "debug-mode", "attestation-freshness"] {
        assert_eq!(report.status(id), Some(Status::Fail), "{id}");
    }
}

#[test]
fn key_policies_that_weaken_the_binding_fail() {
    let status = |policy: Value, id: &str| {
        let mut o = production();
        o.key_policy = Some(policy);
        assess(&o).status(id)
    };
    // Without the attestation condition.
    let mut open = policy_for(PCR0);
    open["Statement"][1]
        .as_object_mut()
        .unwrap()
        .remove("Condition");
    assert_eq!(status(open, "kms-policy-attestation"), Some(Status::Fail));
    // Without the deny for requests that carry no attestation.
    let mut no_null = policy_for(PCR0);
    no_null["Statement"].as_array_mut().unwrap().remove(2);
    assert_eq!(
        status(no_null, "kms-policy-attestation"),
        Some(Status::Fail)
    );
    // For another image.
    assert_eq!(
        status(policy_for(&"11".repeat(48)), "kms-policy-attestation"),
        Some(Status::Fail)
    );
    // A rolling upgrade left half done: the old image still allowed.
    let mut rolling = policy_for(PCR0);
    rolling["Statement"][1]["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:PCR0"] =
        json!([PCR0, "22".repeat(48)]);
    assert_eq!(
        status(rolling, "kms-policy-attestation"),
        Some(Status::Warn)
    );
    // Encrypt no longer denied; the account root delegated.
    let mut encrypt = policy_for(PCR0);
    encrypt["Statement"][3]["Action"] = json!(["kms:ReEncrypt*", "kms:CreateGrant"]);
    assert_eq!(
        status(encrypt, "kms-policy-dangerous-actions"),
        Some(Status::Fail)
    );
    let mut root = policy_for(PCR0);
    root["Statement"].as_array_mut().unwrap().push(json!({
        "Sid": "Enable IAM User Permissions", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"
    }));
    assert_eq!(
        status(root.clone(), "kms-policy-dangerous-actions"),
        Some(Status::Fail)
    );
    // ... which also makes the root both administrator and user.
    assert_eq!(status(root, "kms-policy-separation"), Some(Status::Fail));
    let findings = analyse(&policy_for(PCR0)).unwrap();
    assert_eq!(findings.allowed_pcr0, vec![PCR0.to_owned()]);
    assert!(findings.denies_missing_attestation && findings.dangerous_not_denied.is_empty());
}

#[test]
fn transport_and_store_verdicts() {
    let mut o = production();
    o.transport = Transport::Plaintext;
    assert_eq!(assess(&o).status("public-api-tls"), Some(Status::Fail));
    o.transport = Transport::Tls;
    assert_eq!(assess(&o).status("public-api-tls"), Some(Status::Warn));
    o.store = Some(StoreObservation::Sqlite {
        file_mode: 0o100_644,
        dir_mode: 0o40_700,
    });
    assert_eq!(assess(&o).status("store-permissions"), Some(Status::Fail));
    o.store = Some(StoreObservation::Postgres {
        sslmode: Some("disable".into()),
    });
    assert_eq!(assess(&o).status("store-permissions"), Some(Status::Warn));
    o.store = None;
    assert_eq!(assess(&o).status("store-permissions"), Some(Status::Warn));
    o.key_policy = None;
    assert_eq!(
        assess(&o).status("kms-policy-attestation"),
        Some(Status::Warn)
    );
}

#[test]
fn an_image_that_is_not_expected_fails_and_debug_zeros_fail() {
    let mut o = production();
    o.expected = Vec::new();
    assert_eq!(assess(&o).status("pcrs"), Some(Status::Fail));
    assert_eq!(
        super::assess::debug_mode(Some(&BTreeMap::from([
            (0, vec![0u8; 48]),
            (1, vec![0u8; 48]),
            (2, vec![0u8; 48])
        ])))
        .status,
        Status::Fail
    );
}

#[test]
fn allow_list_entries_in_either_yaml_style() {
    use super::assess::allowlist_hosts;
    let block = "allowlist:\n# a comment: address: evil.example\n- address: kms.eu-west-1.amazonaws.com\n  port: 443\n";
    assert_eq!(allowlist_hosts(block), ["kms.eu-west-1.amazonaws.com"]);
    let flow = "allowlist:\n- {address: kms.us-east-1.amazonaws.com, port: 443}\n- {address: \"example.com\", port: 443}\n";
    assert_eq!(
        allowlist_hosts(flow),
        ["kms.us-east-1.amazonaws.com", "example.com"]
    );
}
