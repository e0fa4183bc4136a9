//! The security assessment of a running deployment: what was observed, judged item by item
//! (PASS, WARN or FAIL, each with its reason), rendered as Markdown and JSON.
//!
//! [`assess`] is a pure function of [`Observations`], so every verdict can be tested by changing
//! one observation; `signer-cli assess` gathers the observations from a live deployment.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use signer_attestation::{
    AttestationPolicy, Claimed, MAX_CLOCK_SKEW, PcrSet, TrustAnchor, VerifiedAttestation,
};

use super::key_policy::{self, PolicyFindings};
use crate::pb;
use crate::trust::AttestedIdentity;

/// A verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Holds.
    Pass,
    /// Not checked, or holds with a caveat an operator should act on.
    Warn,
    /// Does not hold: not a production deployment.
    Fail,
}

/// One judged item.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Stable identifier (`pcrs`, `kms-policy-attestation`, …).
    pub id: &'static str,
    /// What is checked.
    pub title: &'static str,
    /// The verdict.
    pub status: Status,
    /// Why.
    pub reason: String,
}

/// One row of the PCR table.
#[derive(Clone, Debug, Serialize)]
pub struct PcrRow {
    /// The register.
    pub register: u16,
    /// Expected value(s), hex; empty when nothing is expected of it.
    pub expected: Vec<String>,
    /// What the enclave's document claims, hex.
    pub attested: Option<String>,
    /// Whether the attested value is one of the expected ones.
    pub matches: bool,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The public API assessed.
    pub endpoint: String,
    /// When, in ms since the Unix epoch (the assessor's clock).
    pub assessed_at_ms: u64,
    /// Counts per verdict.
    pub summary: BTreeMap<&'static str, usize>,
    /// Expected against attested registers.
    pub pcrs: Vec<PcrRow>,
    /// The items.
    pub checks: Vec<Check>,
}

/// The enclave's answer to `Attest` with a fresh nonce.
#[derive(Clone, Debug)]
pub struct AttestationEvidence {
    /// The NSM document.
    pub document: Vec<u8>,
    /// The encoded `EnclaveConfig` the document's identity hashes.
    pub config: Vec<u8>,
    /// The nonce the assessor sent.
    pub nonce: Vec<u8>,
}

/// How the key store is held.
#[derive(Clone, Debug)]
pub enum StoreObservation {
    /// A SQLite database file (and its directory): their Unix modes.
    Sqlite {
        /// The database file's mode bits.
        file_mode: u32,
        /// Its directory's mode bits.
        dir_mode: u32,
    },
    /// A PostgreSQL URL's TLS mode (`sslmode`), if it names one.
    Postgres {
        /// The `sslmode` parameter.
        sslmode: Option<String>,
    },
}

/// How the assessor reached the public API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// No TLS.
    Plaintext,
    /// TLS, no client certificate.
    Tls,
    /// TLS with a client certificate.
    MutualTls,
}

/// Everything the assessment judges.
#[derive(Clone, Debug)]
pub struct Observations {
    /// The public API.
    pub endpoint: String,
    /// The assessor's clock when the attestation arrived.
    pub now: SystemTime,
    /// The expected registers; several sets during a rolling upgrade.
    pub expected: Vec<PcrSet>,
    /// The enclave's attestation, or why none could be had.
    pub attestation: Result<AttestationEvidence, String>,
    /// A development root to recognise (the local stack's); production documents chain to the
    /// AWS Nitro root, which is always tried first.
    pub development_root: Option<TrustAnchor>,
    /// Oldest acceptable document.
    pub max_age: Duration,
    /// The KMS key policy (`aws kms get-key-policy … --output text`), if supplied.
    pub key_policy: Option<Value>,
    /// How the public API was reached.
    pub transport: Transport,
    /// The key store.
    pub store: Option<StoreObservation>,
    /// The parent's `vsock-proxy` allow-list (YAML text), if supplied.
    pub vsock_proxy_allowlist: Option<String>,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn check(
    id: &'static str,
    title: &'static str,
    status: Status,
    reason: impl Into<String>,
) -> Check {
    Check {
        id,
        title,
        status,
        reason: reason.into(),
    }
}

/// The document's chain and signature checked against `root`, as of its signing time. The
/// registers, the nonce and the freshness are judged as items of their own.
fn verified(
    evidence: &AttestationEvidence,
    claimed: Option<&Claimed>,
    root: TrustAnchor,
) -> Result<VerifiedAttestation, signer_attestation::Error> {
    let policy = AttestationPolicy {
        root,
        allowed_pcrs: vec![claimed.map(|c| c.pcrs.clone()).unwrap_or_default()],
        expected_nonce: None,
        max_age: Duration::MAX,
    };
    signer_attestation::verify_as_of_signing(&evidence.document, &policy)
}

/// Judges the observations.
pub fn assess(o: &Observations) -> Report {
    let mut checks = Vec::new();
    let claimed = o
        .attestation
        .as_ref()
        .ok()
        .and_then(|e| signer_attestation::read_unverified(&e.document).ok());
    let pcrs = pcr_table(o, claimed.as_ref().map(|c| &c.pcrs));
    let aws = o
        .attestation
        .as_ref()
        .map_err(Clone::clone)
        .map(|e| verified(e, claimed.as_ref(), TrustAnchor::aws_nitro_g1()));
    let development = match (&o.attestation, &o.development_root) {
        (Ok(e), Some(root)) => Some(verified(e, claimed.as_ref(), root.clone())),
        _ => None,
    };
    checks.push(match (&aws, &development) {
        (Err(why), _) => check(
            "attestation",
            "The enclave attests through the AWS Nitro root",
            Status::Fail,
            format!("no attestation document: {why}"),
        ),
        (Ok(Ok(_)), _) => check(
            "attestation",
            "The enclave attests through the AWS Nitro root",
            Status::Pass,
            "the document's signature and chain verify to the pinned AWS Nitro Enclaves root G1",
        ),
        (Ok(Err(_)), Some(Ok(_))) => check(
            "attestation",
            "The enclave attests through the AWS Nitro root",
            Status::Fail,
            "the document chains to a development root: this is the development attestor, not a Nitro enclave",
        ),
        (Ok(Err(e)), _) => check(
            "attestation",
            "The enclave attests through the AWS Nitro root",
            Status::Fail,
            format!("the document does not verify: {e}"),
        ),
    });
    // One expected set must match entirely (registers from different images do not mix).
    let whole_set = claimed.as_ref().is_some_and(|c| {
        o.expected
            .iter()
            .any(|set| set.iter().all(|(i, v)| c.pcrs.get(i) == Some(v)))
    });
    let mismatched: Vec<String> = pcrs
        .iter()
        .filter(|r| !r.expected.is_empty() && !r.matches)
        .map(|r| format!("PCR{}", r.register))
        .collect();
    checks.push(if o.expected.is_empty() {
        check(
            "pcrs",
            "Attested measurements are the expected image's",
            Status::Fail,
            "no expected measurements given (--eif or --allow-pcr0)",
        )
    } else if claimed.is_none() {
        check(
            "pcrs",
            "Attested measurements are the expected image's",
            Status::Fail,
            "no readable attestation document",
        )
    } else if whole_set {
        check(
            "pcrs",
            "Attested measurements are the expected image's",
            Status::Pass,
            "every expected register matches the document",
        )
    } else {
        check(
            "pcrs",
            "Attested measurements are the expected image's",
            Status::Fail,
            if mismatched.is_empty() {
                "each register matches some expected image, but no one image matches all".into()
            } else {
                format!("{} differ from the expected image", mismatched.join(", "))
            },
        )
    });
    checks.push(debug_mode(claimed.as_ref().map(|c| &c.pcrs)));
    checks.push(freshness(o, claimed.as_ref(), &aws, &development));
    let attested_pcr0 = pcrs
        .iter()
        .find(|r| r.register == 0)
        .and_then(|r| r.attested.clone());
    checks.extend(key_policy_checks(o, attested_pcr0.as_deref()));
    checks.push(kms_path(o, &aws, &development));
    checks.push(tls(o));
    checks.push(store(o));
    let mut summary = BTreeMap::new();
    for (name, status) in [
        ("PASS", Status::Pass),
        ("WARN", Status::Warn),
        ("FAIL", Status::Fail),
    ] {
        summary.insert(name, checks.iter().filter(|c| c.status == status).count());
    }
    Report {
        endpoint: o.endpoint.clone(),
        assessed_at_ms: ms(o.now),
        summary,
        pcrs,
        checks,
    }
}

fn pcr_table(o: &Observations, claimed: Option<&BTreeMap<u16, Vec<u8>>>) -> Vec<PcrRow> {
    let mut registers: Vec<u16> = vec![0, 1, 2, 8];
    registers.extend(o.expected.iter().flat_map(|s| s.keys().copied()));
    registers.sort_unstable();
    registers.dedup();
    registers
        .into_iter()
        .map(|register| {
            let expected: Vec<Vec<u8>> = o
                .expected
                .iter()
                .filter_map(|s| s.get(&register).cloned())
                .collect();
            let attested = claimed.and_then(|p| p.get(&register));
            PcrRow {
                register,
                matches: attested.is_some_and(|a| expected.contains(a)),
                expected: expected.iter().map(hex::encode).collect(),
                attested: attested.map(hex::encode),
            }
        })
        .collect()
}

pub(super) fn debug_mode(claimed: Option<&BTreeMap<u16, Vec<u8>>>) -> Check {
    let title = "The enclave is not in debug mode";
    let Some(pcrs) = claimed else {
        return check(
            "debug-mode",
            title,
            Status::Fail,
            "no readable attestation document",
        );
    };
    let zero = |i| pcrs.get(&i).is_none_or(|v| v.iter().all(|b| *b == 0));
    if zero(0) && zero(1) && zero(2) {
        check(
            "debug-mode",
            title,
            Status::Fail,
            "PCR0, PCR1 and PCR2 are zeros: a debug-mode enclave (its console is readable by the parent)",
        )
    } else {
        check(
            "debug-mode",
            title,
            Status::Pass,
            "PCR0 is not zeros: not a debug-mode enclave",
        )
    }
}

type Verdict = Result<Result<VerifiedAttestation, signer_attestation::Error>, String>;

fn freshness(
    o: &Observations,
    claimed: Option<&Claimed>,
    aws: &Verdict,
    development: &Option<Result<VerifiedAttestation, signer_attestation::Error>>,
) -> Check {
    let title = "Attestation is fresh, for the nonce sent, and the enclave's clock agrees";
    let id = "attestation-freshness";
    let Some(claimed) = claimed else {
        return check(id, title, Status::Fail, "no readable attestation document");
    };
    let signed = matches!(aws, Ok(Ok(_))) || matches!(development, Some(Ok(_)));
    let sent = o
        .attestation
        .as_ref()
        .map(|e| e.nonce.clone())
        .unwrap_or_default();
    // An empty nonce: the evidence was recorded without one (a fixture); nothing to compare.
    if !signed || (!sent.is_empty() && claimed.nonce.as_ref() != Some(&sent)) {
        return check(
            id,
            title,
            Status::Fail,
            "the document is not signed for the nonce sent: it may be a replay",
        );
    }
    let skew_ms = i128::from(ms(claimed.timestamp)) - i128::from(ms(o.now));
    if skew_ms > i128::try_from(MAX_CLOCK_SKEW.as_millis()).unwrap_or(i128::MAX) {
        return check(
            id,
            title,
            Status::Fail,
            format!(
                "the document is {skew_ms} ms ahead of the assessor's clock (limit {} s)",
                MAX_CLOCK_SKEW.as_secs()
            ),
        );
    }
    let age_ms = -skew_ms;
    if age_ms > i128::try_from(o.max_age.as_millis()).unwrap_or(i128::MAX) {
        return check(
            id,
            title,
            Status::Fail,
            format!(
                "the document is {age_ms} ms old (limit {} s): stale, or the enclave's clock is behind",
                o.max_age.as_secs()
            ),
        );
    }
    check(
        id,
        title,
        Status::Pass,
        format!(
            "signed {age_ms} ms before it arrived (limit {} s; future skew limit {} s)",
            o.max_age.as_secs(),
            MAX_CLOCK_SKEW.as_secs()
        ),
    )
}

fn key_policy_checks(o: &Observations, attested_pcr0: Option<&str>) -> Vec<Check> {
    const ATT: &str = "KMS unwraps only for an attested enclave with the expected PCR0";
    const DANGER: &str = "Dangerous KMS actions are denied to the instance role";
    const SEP: &str = "Key administrators are not key users";
    let Some(policy) = &o.key_policy else {
        let why = "no key policy supplied (--key-policy): not checked";
        return vec![
            check("kms-policy-attestation", ATT, Status::Warn, why),
            check("kms-policy-dangerous-actions", DANGER, Status::Warn, why),
            check("kms-policy-separation", SEP, Status::Warn, why),
        ];
    };
    let f: PolicyFindings = match key_policy::analyse(policy) {
        Ok(f) => f,
        Err(e) => {
            let why = format!("the key policy does not parse: {e}");
            return vec![
                check("kms-policy-attestation", ATT, Status::Fail, why.clone()),
                check(
                    "kms-policy-dangerous-actions",
                    DANGER,
                    Status::Fail,
                    why.clone(),
                ),
                check("kms-policy-separation", SEP, Status::Fail, why),
            ];
        }
    };
    let expected_pcr0: Vec<String> = o
        .expected
        .iter()
        .filter_map(|s| s.get(&0).map(hex::encode))
        .collect();
    let attestation = if !f.unconditional_unwrap.is_empty() {
        check(
            "kms-policy-attestation",
            ATT,
            Status::Fail,
            format!(
                "{} grant(s) Decrypt/GenerateDataKey without a PCR0 condition",
                f.unconditional_unwrap.join(", ")
            ),
        )
    } else if !f.denies_missing_attestation {
        check(
            "kms-policy-attestation",
            ATT,
            Status::Fail,
            "no Deny refuses unwrapping without an attestation (Null kms:RecipientAttestation:PCR0)",
        )
    } else if attested_pcr0.is_some_and(|p| !f.allowed_pcr0.iter().any(|a| a == p)) {
        check(
            "kms-policy-attestation",
            ATT,
            Status::Fail,
            "the running enclave's PCR0 is not one the policy allows",
        )
    } else if let Some(stray) = f.allowed_pcr0.iter().find(|a| !expected_pcr0.contains(a)) {
        check(
            "kms-policy-attestation",
            ATT,
            Status::Warn,
            format!(
                "the policy also allows PCR0 {stray}, which is not expected: finish the rolling upgrade and remove it"
            ),
        )
    } else {
        check(
            "kms-policy-attestation",
            ATT,
            Status::Pass,
            format!(
                "unwrapping requires an attestation with PCR0 in [{}]; requests without one are denied",
                f.allowed_pcr0.join(", ")
            ),
        )
    };
    let mut danger_why = Vec::new();
    if !f.dangerous_not_denied.is_empty() {
        danger_why.push(format!("not denied: {}", f.dangerous_not_denied.join(", ")));
    }
    if f.account_root_delegation {
        danger_why
            .push("the account root may use the key, so any IAM policy can grant Decrypt".into());
    }
    let danger = if danger_why.is_empty() {
        check(
            "kms-policy-dangerous-actions",
            DANGER,
            Status::Pass,
            "Encrypt, ReEncrypt*, CreateGrant, PutKeyPolicy and key-pair/plaintext-less generation are explicitly denied",
        )
    } else {
        check(
            "kms-policy-dangerous-actions",
            DANGER,
            Status::Fail,
            danger_why.join("; "),
        )
    };
    let separation = if f.admin_and_user.is_empty() {
        check(
            "kms-policy-separation",
            SEP,
            Status::Pass,
            "no principal both changes the policy and unwraps",
        )
    } else {
        check(
            "kms-policy-separation",
            SEP,
            Status::Fail,
            format!(
                "{} may both change the policy and unwrap",
                f.admin_and_user.join(", ")
            ),
        )
    };
    vec![attestation, danger, separation]
}

fn kms_path(
    o: &Observations,
    aws: &Verdict,
    development: &Option<Result<VerifiedAttestation, signer_attestation::Error>>,
) -> Check {
    let title = "The enclave unwraps through AWS KMS, reached only through the KMS allow-list";
    let document = match (aws, development) {
        (Ok(Ok(d)), _) | (_, Some(Ok(d))) => d,
        _ => {
            return check(
                "enclave-kms-path",
                title,
                Status::Fail,
                "no verified attestation: the enclave's configuration is unknown",
            );
        }
    };
    let Ok(evidence) = &o.attestation else {
        return check("enclave-kms-path", title, Status::Fail, "no attestation");
    };
    let config: pb::EnclaveConfig =
        match AttestedIdentity::from_attestation(document, &evidence.config) {
            Ok(identity) => identity.config,
            Err(e) => {
                return check(
                    "enclave-kms-path",
                    title,
                    Status::Fail,
                    format!("attested configuration: {e}"),
                );
            }
        };
    if config.provider != "aws-kms" {
        return check(
            "enclave-kms-path",
            title,
            Status::Fail,
            format!(
                "the attested key-wrapping provider is {:?}: a development stand-in, not AWS KMS",
                config.provider
            ),
        );
    }
    let Some(allowlist) = &o.vsock_proxy_allowlist else {
        return check(
            "enclave-kms-path",
            title,
            Status::Warn,
            format!(
                "the attested provider is AWS KMS with key {}; the vsock-proxy allow-list was not supplied (--vsock-proxy-config)",
                config.kms_key_arn
            ),
        );
    };
    let hosts = allowlist_hosts(allowlist);
    // The key's region (arn:aws:kms:<region>:<account>:key/<id>) names the one endpoint.
    let region = config.kms_key_arn.split(':').nth(3).unwrap_or_default();
    let endpoints = [
        format!("kms.{region}.amazonaws.com"),
        format!("kms-fips.{region}.amazonaws.com"),
    ];
    if hosts.is_empty() || !hosts.iter().all(|h| endpoints.iter().any(|e| e == h)) {
        return check(
            "enclave-kms-path",
            title,
            Status::Fail,
            format!(
                "the vsock-proxy allow-list names {hosts:?}; the key ({}) is served only by {}",
                config.kms_key_arn, endpoints[0]
            ),
        );
    }
    check(
        "enclave-kms-path",
        title,
        Status::Pass,
        format!(
            "attested provider AWS KMS, key {}; the vsock-proxy allows only {}",
            config.kms_key_arn,
            hosts.join(", ")
        ),
    )
}

/// The `address:` entries of a vsock-proxy allow-list, block (`- address: …`) or flow
/// (`- {address: …, port: …}`) style.
pub(super) fn allowlist_hosts(allowlist: &str) -> Vec<&str> {
    allowlist
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once("address:").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split([',', '}', ' ', '\t']).find(|t| !t.is_empty()))
        .map(|h| h.trim_matches(['"', '\'']))
        .collect()
}

fn tls(o: &Observations) -> Check {
    let title = "The public API is served over TLS";
    match o.transport {
        Transport::MutualTls => check(
            "public-api-tls",
            title,
            Status::Pass,
            "reached over TLS with a client certificate (mutual TLS)",
        ),
        Transport::Tls => check(
            "public-api-tls",
            title,
            Status::Warn,
            "reached over TLS without a client certificate: whether the host requires mutual TLS was not shown",
        ),
        Transport::Plaintext => check(
            "public-api-tls",
            title,
            Status::Fail,
            "the public API answered in plaintext",
        ),
    }
}

fn store(o: &Observations) -> Check {
    let title = "The key store is readable by the host's user only";
    match &o.store {
        None => check(
            "store-permissions",
            title,
            Status::Warn,
            "no store supplied (--store): not checked",
        ),
        Some(StoreObservation::Sqlite {
            file_mode,
            dir_mode,
        }) => {
            if file_mode & 0o077 != 0 || dir_mode & 0o022 != 0 {
                check(
                    "store-permissions",
                    title,
                    Status::Fail,
                    format!(
                        "database mode {:o}, directory mode {:o}: others can read sealed keys or replace the database",
                        file_mode & 0o777,
                        dir_mode & 0o777
                    ),
                )
            } else {
                check(
                    "store-permissions",
                    title,
                    Status::Pass,
                    format!(
                        "database mode {:o}, directory mode {:o}",
                        file_mode & 0o777,
                        dir_mode & 0o777
                    ),
                )
            }
        }
        Some(StoreObservation::Postgres { sslmode }) => match sslmode.as_deref() {
            Some("verify-full") => check(
                "store-permissions",
                title,
                Status::Pass,
                "PostgreSQL over TLS with the server's name verified (sslmode=verify-full)",
            ),
            other => check(
                "store-permissions",
                title,
                Status::Warn,
                format!(
                    "PostgreSQL sslmode {other:?}: use verify-full; roles and grants are the database's to show"
                ),
            ),
        },
    }
}

impl Report {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("# Signer deployment assessment\n\n");
        out.push_str(&format!(
            "Endpoint `{}`, assessed at {} ms since the Unix epoch. **{} PASS, {} WARN, {} FAIL.**\n\n",
            self.endpoint,
            self.assessed_at_ms,
            self.summary.get("PASS").copied().unwrap_or(0),
            self.summary.get("WARN").copied().unwrap_or(0),
            self.summary.get("FAIL").copied().unwrap_or(0),
        ));
        out.push_str(
            "## Measurements\n\n| PCR | expected | attested | match |\n|---|---|---|---|\n",
        );
        for row in &self.pcrs {
            let expected = if row.expected.is_empty() {
                "—".to_owned()
            } else {
                row.expected
                    .iter()
                    .map(|e| format!("`{e}`"))
                    .collect::<Vec<_>>()
                    .join("<br>")
            };
            let attested = row
                .attested
                .as_ref()
                .map_or("—".to_owned(), |a| format!("`{a}`"));
            let verdict = match (row.expected.is_empty(), row.matches) {
                (true, _) => "not expected",
                (false, true) => "yes",
                (false, false) => "**no**",
            };
            out.push_str(&format!(
                "| {} | {expected} | {attested} | {verdict} |\n",
                row.register
            ));
        }
        out.push_str("\n## Items\n\n| item | status | reason |\n|---|---|---|\n");
        for c in &self.checks {
            let status = match c.status {
                Status::Pass => "PASS",
                Status::Warn => "WARN",
                Status::Fail => "**FAIL**",
            };
            out.push_str(&format!(
                "| {} (`{}`) | {status} | {} |\n",
                c.title,
                c.id,
                c.reason.replace('|', "\\|")
            ));
        }
        out
    }

    /// The verdict of item `id`.
    pub fn status(&self, id: &str) -> Option<Status> {
        self.checks.iter().find(|c| c.id == id).map(|c| c.status)
    }
}
