//! The deployment tooling without a stack: `signer-cli pcrs` on enclave images built here with
//! AWS's `aws-nitro-enclaves-image-format` crate (test blobs for kernel and ramdisks), checked
//! against the crate's own measurements and against PCRs computed independently below; and the
//! files in `deploy/` parsed by what reads them.
#![expect(
    clippy::unwrap_used,
    reason = "integration tests: a failed step fails the test, helpers included"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use aws_nitro_enclaves_image_format::defs::{EifBuildInfo, EifIdentityInfo};
use aws_nitro_enclaves_image_format::utils::EifBuilder;
use aws_nitro_enclaves_image_format::utils::eif_signer::SignKeyData;
use serde_json::Value;
use sha2::{Digest, Sha384};
use signer_client::attestation::eif;

/// Deterministic test bytes (not a kernel or a ramdisk: the format does not care).
fn blob(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            u8::try_from(i % 256)
                .unwrap()
                .wrapping_mul(31)
                .wrapping_add(seed)
        })
        .collect()
}

/// `SHA-384(zeros ‖ SHA-384(parts…))`, as the format defines a register.
fn register(parts: &[&[u8]]) -> String {
    let mut inner = Sha384::new();
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha384::new();
    outer.update([0u8; 48]);
    outer.update(inner.finalize());
    hex::encode(outer.finalize())
}

struct Image {
    path: PathBuf,
    crate_measurements: BTreeMap<String, String>,
    kernel: Vec<u8>,
    cmdline: Vec<u8>,
    ramdisks: Vec<Vec<u8>>,
}

const CMDLINE: &str = "reboot=k panic=30 pci=off nomodules console=ttyS0 random.trust_cpu=on";

/// An EIF from test blobs, optionally signed with a fresh P-384 key and certificate (PEM files
/// in `dir`); the crate's measurements come back from its builder.
fn build_eif(dir: &Path, name: &str, app: &[u8], signed: Option<&[u8]>) -> Image {
    let kernel = blob(1, 70_000);
    let ramdisks = vec![blob(2, 100_000), app.to_vec(), blob(4, 3_000)];
    std::fs::write(dir.join("kernel"), &kernel).unwrap();
    let mut sign_info = None;
    if let Some(cert_pem) = signed {
        std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
        sign_info = Some(
            SignKeyData::new(dir.join("key.pem").to_str().unwrap(), &dir.join("cert.pem")).unwrap(),
        );
    }
    let info = EifIdentityInfo {
        img_name: "signer-enclave".into(),
        img_version: "test".into(),
        build_info: EifBuildInfo {
            build_time: "2026-12-06T00:00:00Z".into(),
            build_tool: "tests".into(),
            build_tool_version: "0".into(),
            img_os: "linux".into(),
            img_kernel: "test".into(),
        },
        docker_info: serde_json::json!({}),
        custom_info: serde_json::json!({}),
    };
    let mut builder = EifBuilder::new(
        &dir.join("kernel"),
        CMDLINE.into(),
        sign_info,
        sha2_010::Sha384::default(),
        0,
        info,
    );
    for (i, ramdisk) in ramdisks.iter().enumerate() {
        let path = dir.join(format!("ramdisk{i}"));
        std::fs::write(&path, ramdisk).unwrap();
        builder.add_ramdisk(&path);
    }
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    let crate_measurements = builder.write_to(&mut file);
    Image {
        path,
        crate_measurements,
        kernel,
        cmdline: CMDLINE.as_bytes().to_vec(),
        ramdisks,
    }
}

fn cli(args: &[&str]) -> (bool, Value) {
    let output = Command::new(tests::bin_dir().join("signer-cli"))
        .args(args)
        .output()
        .unwrap();
    let text = if output.status.success() {
        output.stdout
    } else {
        output.stderr
    };
    (
        output.status.success(),
        serde_json::from_slice(&text).unwrap_or(Value::Null),
    )
}

/// A P-384 key (PKCS#8 PEM, in `dir/key.pem`) and its self-signed certificate (PEM, DER).
fn signing_certificate(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["signer image signing".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem().into_bytes(), cert.der().to_vec())
}

#[test]
fn pcrs_of_an_unsigned_image_match_the_crate_and_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_eif(dir.path(), "signer.eif", &blob(3, 250_000), None);
    let ramdisks: Vec<&[u8]> = image.ramdisks.iter().map(Vec::as_slice).collect();
    let mut all: Vec<&[u8]> = vec![&image.kernel, &image.cmdline];
    all.extend(&ramdisks);
    let expected_pcr0 = register(&all);
    let expected_pcr1 = register(&[&image.kernel, &image.cmdline, ramdisks[0]]);
    let expected_pcr2 = register(&ramdisks[1..]);
    // Three computations agree: the crate's builder, the format by hand, and the reader.
    assert_eq!(image.crate_measurements["PCR0"], expected_pcr0);
    assert_eq!(image.crate_measurements["PCR1"], expected_pcr1);
    assert_eq!(image.crate_measurements["PCR2"], expected_pcr2);
    assert!(!image.crate_measurements.contains_key("PCR8"));

    let measured = eif::measure(std::fs::File::open(&image.path).unwrap()).unwrap();
    assert_eq!(hex::encode(measured.pcr0), expected_pcr0);
    assert_eq!(hex::encode(measured.pcr1), expected_pcr1);
    assert_eq!(hex::encode(measured.pcr2), expected_pcr2);
    assert_eq!(measured.pcr8, None);

    let (ok, printed) = cli(&["pcrs", "--eif", image.path.to_str().unwrap()]);
    assert!(ok, "{printed}");
    assert_eq!(
        printed,
        serde_json::json!({"PCR0": expected_pcr0, "PCR1": expected_pcr1, "PCR2": expected_pcr2})
    );

    // The same values from `nitro-cli describe-eif` JSON (its shape, upper-case hex accepted).
    let describe = serde_json::json!({
        "EifVersion": 4,
        "Measurements": {
            "HashAlgorithm": "Sha384 { ... }",
            "PCR0": expected_pcr0.to_uppercase(), "PCR1": expected_pcr1, "PCR2": expected_pcr2,
        },
        "IsSigned": false,
    });
    let described = dir.path().join("describe.json");
    std::fs::write(&described, describe.to_string()).unwrap();
    let (ok, from_json) = cli(&["pcrs", "--describe-eif", described.to_str().unwrap()]);
    assert!(ok, "{from_json}");
    assert_eq!(from_json, printed);
}

#[test]
fn a_changed_application_changes_pcr0_and_pcr2_only() {
    let dir = tempfile::tempdir().unwrap();
    let a = build_eif(dir.path(), "a.eif", &blob(3, 250_000), None);
    let mut app = blob(3, 250_000);
    app[123_456] ^= 1;
    let b = build_eif(dir.path(), "b.eif", &app, None);
    let a = eif::measure(std::fs::File::open(&a.path).unwrap()).unwrap();
    let b = eif::measure(std::fs::File::open(&b.path).unwrap()).unwrap();
    assert_ne!(a.pcr0, b.pcr0);
    assert_ne!(a.pcr2, b.pcr2);
    assert_eq!(a.pcr1, b.pcr1, "the boot part is unchanged");
}

#[test]
fn pcr8_of_a_signed_image_is_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, der) = signing_certificate(dir.path());
    let image = build_eif(dir.path(), "signed.eif", &blob(3, 5_000), Some(&cert_pem));
    let expected_pcr8 = register(&[&der]);
    assert_eq!(image.crate_measurements["PCR8"], expected_pcr8);
    let measured = eif::measure(std::fs::File::open(&image.path).unwrap()).unwrap();
    assert_eq!(measured.pcr8.map(hex::encode), Some(expected_pcr8.clone()));
    assert_eq!(
        hex::encode(measured.pcr0),
        image.crate_measurements["PCR0"],
        "the signature is not part of PCR0"
    );
    let (ok, printed) = cli(&["pcrs", "--eif", image.path.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(printed["PCR8"], expected_pcr8);
}

#[test]
fn malformed_images_are_refused_not_measured() {
    let dir = tempfile::tempdir().unwrap();
    let image = build_eif(dir.path(), "signer.eif", &blob(3, 20_000), None);
    let good = std::fs::read(&image.path).unwrap();
    let refused = |bytes: &[u8]| eif::measure(bytes).is_err();
    assert!(!refused(&good));
    // Truncated anywhere: in the header, in a section header, in a section.
    for cut in [0, 100, 548, 548 + 5, good.len() / 2, good.len() - 1] {
        assert!(refused(&good[..cut]), "truncated at {cut}");
    }
    let mut magic = good.clone();
    magic[0] = b'x';
    assert!(refused(&magic));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(refused(&trailing), "bytes after the announced sections");
    let mut unknown_section = good.clone();
    unknown_section[548 + 1] = 9; // the first section's type
    assert!(refused(&unknown_section));
    let mut too_many = good.clone();
    too_many[27] = 33; // announced sections
    assert!(refused(&too_many));
    let (ok, error) = cli(&["pcrs", "--eif", dir.path().join("kernel").to_str().unwrap()]);
    assert!(!ok);
    assert!(
        error["error"].as_str().unwrap().contains("enclave image"),
        "{error}"
    );
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

const ADMIN: &str = "arn:aws:iam::123456789012:role/signer-admin";
const INSTANCE: &str = "arn:aws:iam::123456789012:role/signer-instance";

#[test]
fn kms_policy_is_the_reviewed_reference_policy() {
    let pcr0 = "ab".repeat(48);
    let (ok, generated) = cli(&[
        "kms-policy",
        "--pcr0",
        &pcr0,
        "--key-admin-role",
        ADMIN,
        "--instance-role",
        INSTANCE,
    ]);
    assert!(ok, "{generated}");
    let reference = std::fs::read_to_string(repo("deploy/kms/key-policy.json"))
        .unwrap()
        .replace("${ADMIN_ROLE_ARN}", ADMIN)
        .replace("${INSTANCE_ROLE_ARN}", INSTANCE)
        .replace("${PCR0}", &pcr0);
    let reference: Value = serde_json::from_str(&reference).unwrap();
    assert_eq!(generated, reference);

    // A rolling upgrade: both images, as a list; extra registers become extra conditions.
    let next = "CD".repeat(48);
    let (ok, rolling) = cli(&[
        "kms-policy",
        "--pcr0",
        &pcr0,
        "--pcr0",
        &next,
        "--pcr8",
        &"01".repeat(48),
        "--key-admin-role",
        ADMIN,
        "--instance-role",
        INSTANCE,
    ]);
    assert!(ok, "{rolling}");
    let condition = &rolling["Statement"][1]["Condition"]["StringEqualsIgnoreCase"];
    assert_eq!(
        condition["kms:RecipientAttestation:PCR0"],
        serde_json::json!([pcr0, next.to_lowercase()])
    );
    assert_eq!(condition["kms:RecipientAttestation:PCR8"], "01".repeat(48));
}

#[test]
fn kms_policy_refuses_what_would_weaken_it() {
    let pcr0 = "ab".repeat(48);
    for (args, why) in [
        (vec!["--pcr0", "abcd"], "short PCR0"),
        (vec!["--pcr0", &"zz".repeat(48)], "not hex"),
    ] {
        let mut all = vec!["kms-policy"];
        all.extend(args);
        all.extend(["--key-admin-role", ADMIN, "--instance-role", INSTANCE]);
        assert!(!cli(&all).0, "{why}");
    }
    // Administrators who are also users; a wildcard principal; no PCR0 at all.
    assert!(
        !cli(&[
            "kms-policy",
            "--pcr0",
            &pcr0,
            "--key-admin-role",
            ADMIN,
            "--instance-role",
            ADMIN
        ])
        .0
    );
    assert!(
        !cli(&[
            "kms-policy",
            "--pcr0",
            &pcr0,
            "--key-admin-role",
            ADMIN,
            "--instance-role",
            "arn:aws:iam::123456789012:role/*"
        ])
        .0
    );
    assert!(
        !cli(&[
            "kms-policy",
            "--key-admin-role",
            ADMIN,
            "--instance-role",
            INSTANCE
        ])
        .0
    );
}

#[test]
fn the_production_host_config_is_what_the_host_accepts() {
    let text = std::fs::read_to_string(repo("deploy/host/signer-host.toml")).unwrap();
    // As shipped, with its ${PCR0} placeholder, the host refuses to start: fail closed.
    let shipped = signer_host::config::Config::parse(&text).unwrap();
    assert!(shipped.attestation.as_ref().unwrap().expectation().is_err());
    let filled = text.replace("${PCR0}", &"ab".repeat(48));
    let config = signer_host::config::Config::parse(&filled).unwrap();
    config.attestation.as_ref().unwrap().expectation().unwrap();
    assert!(
        config.enclave.dev.is_none(),
        "no development enclave in production"
    );
    assert!(config.tls.is_some(), "TLS on the public API");
}

#[test]
fn the_iam_policies_grant_the_instance_only_the_unwrap_of_one_key() {
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/iam/instance-role-policy.json")).unwrap(),
    )
    .unwrap();
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0]["Effect"], "Allow");
    assert_eq!(
        statements[0]["Action"],
        serde_json::json!(["kms:Decrypt", "kms:GenerateDataKey"])
    );
    assert_eq!(statements[0]["Resource"], "${KMS_KEY_ARN}");
    let trust: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/iam/instance-trust-policy.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "ec2.amazonaws.com"
    );
}

#[test]
fn the_systemd_units_verify() {
    let output = Command::new(repo("deploy/systemd/verify"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The YAML files, parsed by PyYAML (from the KMS test server's environment) into JSON.
fn yaml(path: &str) -> Value {
    let python = std::env::var_os("SIGNER_TEST_PYTHON")
        .map_or_else(|| repo(".venv/bin/python"), PathBuf::from);
    let output = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(repo(path))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_nitro_configs_parse_and_say_what_they_should() {
    let allocator = yaml("deploy/nitro/allocator.yaml");
    let memory = allocator["memory_mib"].as_u64().unwrap();
    assert_eq!(allocator["cpu_count"], 2);
    // The enclave unit asks for what the allocator reserves.
    let unit = std::fs::read_to_string(repo("deploy/systemd/signer-enclave.service")).unwrap();
    assert!(unit.contains(&format!("--memory {memory} ")), "{unit}");
    assert!(unit.contains("--cpu-count 2 ") && unit.contains("--enclave-cid 16 "));
    assert!(
        !unit
            .lines()
            .any(|l| l.starts_with("Exec") && l.contains("--debug-mode"))
    );
    let proxy = yaml("deploy/nitro/vsock-proxy.yaml");
    let entries = proxy["allowlist"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "KMS only");
    let address = entries[0]["address"].as_str().unwrap();
    assert!(address.starts_with("kms.") && address.ends_with(".amazonaws.com"));
    assert_eq!(entries[0]["port"], 443);
}

#[test]
fn every_base_image_is_pinned_by_digest() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let from: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .collect();
    assert!(!from.is_empty());
    for line in from {
        let image = line.split_whitespace().nth(1).unwrap();
        assert!(
            image == "scratch" || image.contains("@sha256:"),
            "{line}: pin the base image by digest"
        );
    }
    // The build context is the reproduced binary alone.
    let ignore = std::fs::read_to_string(repo(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "*"));
    assert!(
        ignore
            .lines()
            .any(|l| l == "!target/reproduce/signer-enclave")
    );
    assert!(
        dockerfile.contains("COPY --chmod=0555 target/reproduce/signer-enclave /signer-enclave")
    );
}
