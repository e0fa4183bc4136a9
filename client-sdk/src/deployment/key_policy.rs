//! The KMS key policy for the signer's wrapping key, written from enclave measurements, and the
//! checks an assessment applies to a policy it is shown.
//!
//! The written policy has four statements (`deploy/kms/README.md` explains each): administrators
//! manage but never use the key; the instance role may `Decrypt` and `GenerateDataKey` only with
//! an attestation whose registers are among the allowed values; nobody unwraps without
//! attestation; the instance role may do nothing else.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::normalise_pcr;
use crate::Error;

/// Actions the administrators may take: management, never use.
const ADMIN_ACTIONS: &[&str] = &[
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
];
/// What the enclave needs: unwrap keyring keys and make new ones, for a recipient only.
const UNWRAP_ACTIONS: &[&str] = &["kms:Decrypt", "kms:GenerateDataKey"];
/// Denied to the instance role outright. A host that could `Encrypt` could wrap a keyring key it
/// chose; a grant outlives policy changes; `PutKeyPolicy` would let it name its own image.
pub const DENIED_TO_INSTANCE: &[&str] = &[
    "kms:Encrypt",
    "kms:ReEncrypt*",
    "kms:CreateGrant",
    "kms:PutKeyPolicy",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair*",
    "kms:ImportKeyMaterial",
];
/// The registers a condition may name (`kms:RecipientAttestation:PCR<n>`); PCR0 is required.
pub const CONDITION_REGISTERS: &[u8] = &[0, 1, 2, 3, 4, 8];

/// What the policy is written for.
#[derive(Clone, Debug, Default)]
pub struct KeyPolicyRequest {
    /// The role operators assume to manage the key.
    pub admin_role: String,
    /// The parent instance's role, whose credentials the enclave uses.
    pub instance_role: String,
    /// Allowed values per register; several during a rolling upgrade. PCR0 must be present.
    pub pcrs: BTreeMap<u8, Vec<String>>,
}

fn is_role_arn(text: &str) -> bool {
    text.starts_with("arn:aws") && text.contains(":iam::") && !text.contains('*')
}

/// One value as a string, several as a list (KMS accepts both; a single value reads better).
fn one_or_many(values: &[String]) -> Value {
    match values {
        [one] => json!(one),
        many => json!(many),
    }
}

/// Writes the key policy.
///
/// # Errors
/// [`Error::InvalidArgument`] when PCR0 is missing, a value is not a register's 96 hex digits,
/// a register is not one KMS conditions name, a role is not an IAM ARN, or administrators and
/// users are the same role.
pub fn key_policy(request: &KeyPolicyRequest) -> Result<Value, Error> {
    if !is_role_arn(&request.admin_role) || !is_role_arn(&request.instance_role) {
        return Err(Error::InvalidArgument(
            "roles are IAM ARNs (arn:aws:iam::<account>:role/<name>), without wildcards",
        ));
    }
    if request.admin_role == request.instance_role {
        return Err(Error::InvalidArgument(
            "the key's administrators must not be its users: use two roles",
        ));
    }
    if request.pcrs.get(&0).is_none_or(Vec::is_empty) {
        return Err(Error::InvalidArgument("at least one PCR0 is required"));
    }
    let mut conditions = serde_json::Map::new();
    for (register, values) in &request.pcrs {
        if !CONDITION_REGISTERS.contains(register) {
            return Err(Error::InvalidArgument(
                "KMS conditions name PCR0, 1, 2, 3, 4 and 8",
            ));
        }
        if values.is_empty() {
            continue;
        }
        let mut values = values
            .iter()
            .map(|v| normalise_pcr(v))
            .collect::<Result<Vec<_>, _>>()?;
        values.dedup();
        conditions.insert(
            format!("kms:RecipientAttestation:PCR{register}"),
            one_or_many(&values),
        );
    }
    Ok(json!({
        "Version": "2012-10-17",
        "Id": "signer-keyring-wrapping-key",
        "Statement": [
            {
                "Sid": "KeyAdministratorsManageButNeverUse",
                "Effect": "Allow",
                "Principal": { "AWS": request.admin_role },
                "Action": ADMIN_ACTIONS,
                "Resource": "*"
            },
            {
                "Sid": "EnclaveUnwrapsOnlyWithAttestation",
                "Effect": "Allow",
                "Principal": { "AWS": request.instance_role },
                "Action": UNWRAP_ACTIONS,
                "Resource": "*",
                "Condition": { "StringEqualsIgnoreCase": conditions }
            },
            {
                "Sid": "NobodyUnwrapsWithoutAttestation",
                "Effect": "Deny",
                "Principal": { "AWS": "*" },
                "Action": UNWRAP_ACTIONS,
                "Resource": "*",
                "Condition": { "Null": { "kms:RecipientAttestation:PCR0": "true" } }
            },
            {
                "Sid": "InstanceRoleDoesNothingElse",
                "Effect": "Deny",
                "Principal": { "AWS": request.instance_role },
                "Action": DENIED_TO_INSTANCE,
                "Resource": "*"
            }
        ]
    }))
}

/// What [`analyse`] found in a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyFindings {
    /// PCR0 values (lower-case hex) under which an Allow grants `Decrypt` or `GenerateDataKey`.
    pub allowed_pcr0: Vec<String>,
    /// Allow statements granting an unwrap action with no PCR0 / ImageSha384 condition.
    pub unconditional_unwrap: Vec<String>,
    /// Whether a Deny refuses unwrapping to requests with no attestation.
    pub denies_missing_attestation: bool,
    /// Dangerous actions not covered by an explicit Deny.
    pub dangerous_not_denied: Vec<String>,
    /// Statements that let any IAM policy in the account grant use (`…:root` with `kms:*`).
    pub account_root_delegation: bool,
    /// Principals that both administer (`PutKeyPolicy`) and use the key.
    pub admin_and_user: Vec<String>,
}

fn list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether an action pattern of a statement (`kms:*`, `kms:ReEncrypt*`) covers `action`.
fn covers(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    match p.strip_suffix('*') {
        Some(prefix) => a.starts_with(prefix) || a.strip_suffix('*') == Some(prefix),
        None => p == a || p == "*",
    }
}

fn principals(statement: &Value) -> Vec<String> {
    match statement.get("Principal") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(p) => list(p.get("AWS")),
        None => Vec::new(),
    }
}

/// The PCR0 values a statement's conditions require (`PCR0` or `ImageSha384`, any operator that
/// compares strings), or `None` when it names none.
fn pcr0_condition(statement: &Value) -> Option<Vec<String>> {
    let conditions = statement.get("Condition")?.as_object()?;
    let mut found = None;
    for (operator, entries) in conditions {
        if !operator.starts_with("StringEquals") {
            continue;
        }
        for (key, value) in entries.as_object()? {
            let key = key.to_ascii_lowercase();
            if key == "kms:recipientattestation:pcr0"
                || key == "kms:recipientattestation:imagesha384"
            {
                let values = list(Some(value))
                    .iter()
                    .map(|v| v.to_ascii_lowercase())
                    .collect();
                found = Some(values);
            }
        }
    }
    found
}

/// Reads a key policy the way an assessor does.
///
/// # Errors
/// [`Error::InvalidArgument`] when it is not a JSON policy with statements.
pub fn analyse(policy: &Value) -> Result<PolicyFindings, Error> {
    let statements = match policy.get("Statement") {
        Some(Value::Array(items)) => items.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => return Err(Error::InvalidArgument("a key policy has Statement")),
    };
    let mut findings = PolicyFindings::default();
    let mut administrators = Vec::new();
    let mut users = Vec::new();
    for (i, statement) in statements.iter().enumerate() {
        let name = statement
            .get("Sid")
            .and_then(Value::as_str)
            .map_or_else(|| format!("statement {i}"), str::to_owned);
        let allow = statement.get("Effect").and_then(Value::as_str) == Some("Allow");
        let actions = list(statement.get("Action"));
        let grants = |action: &str| actions.iter().any(|p| covers(p, action));
        let unwraps = UNWRAP_ACTIONS.iter().any(|a| grants(a));
        if allow {
            if unwraps {
                users.extend(principals(statement));
                match pcr0_condition(statement) {
                    Some(values) => findings.allowed_pcr0.extend(values),
                    None => findings.unconditional_unwrap.push(name.clone()),
                }
            }
            if grants("kms:PutKeyPolicy") {
                administrators.extend(principals(statement));
            }
            if principals(statement).iter().any(|p| p.ends_with(":root")) && grants("kms:Decrypt") {
                findings.account_root_delegation = true;
            }
        } else if unwraps {
            let null_pcr0 = statement
                .get("Condition")
                .and_then(|c| c.get("Null"))
                .and_then(Value::as_object)
                .is_some_and(|m| {
                    m.iter().any(|(k, v)| {
                        k.eq_ignore_ascii_case("kms:RecipientAttestation:PCR0")
                            && v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true"))
                    })
                });
            findings.denies_missing_attestation |= null_pcr0;
        }
    }
    for action in DENIED_TO_INSTANCE {
        let denied = statements.iter().any(|s| {
            s.get("Effect").and_then(Value::as_str) == Some("Deny")
                && s.get("Condition").is_none()
                && list(s.get("Action")).iter().any(|p| covers(p, action))
        });
        if !denied {
            findings.dangerous_not_denied.push((*action).to_owned());
        }
    }
    findings.allowed_pcr0.sort();
    findings.allowed_pcr0.dedup();
    administrators.sort();
    administrators.dedup();
    findings.admin_and_user = administrators
        .into_iter()
        .filter(|a| users.contains(a))
        .collect();
    Ok(findings)
}
