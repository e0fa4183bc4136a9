//! `signer-cli pcrs`, `kms-policy` and `assess`: an image's measurements, the KMS key policy for
//! them, and the assessment of a running deployment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Value, json};
use signer_client::attestation::{PcrSet, TrustAnchor, eif};
use signer_client::deployment::assess::{self, Observations, StoreObservation, Transport};
use signer_client::deployment::key_policy::{KeyPolicyRequest, key_policy};
use signer_client::deployment::normalise_pcr;
use signer_client::{Client, Error};

/// Where the measurements come from.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct PcrSource {
    /// An enclave image file to measure.
    #[arg(long)]
    eif: Option<PathBuf>,
    /// `nitro-cli describe-eif` output (JSON; `-` for standard input).
    #[arg(long)]
    describe_eif: Option<PathBuf>,
}

/// `kms-policy` arguments.
#[derive(Debug, Args)]
pub(crate) struct KmsPolicyArgs {
    /// An allowed PCR0 (96 hex digits); repeat during a rolling upgrade.
    #[arg(long, required = true)]
    pcr0: Vec<String>,
    /// Also require PCR1 (kernel and boot ramdisk) to be one of these.
    #[arg(long)]
    pcr1: Vec<String>,
    /// Also require PCR2 (the application) to be one of these.
    #[arg(long)]
    pcr2: Vec<String>,
    /// Also require PCR3 (the parent instance's IAM role) to be one of these.
    #[arg(long)]
    pcr3: Vec<String>,
    /// Also require PCR8 (the image's signing certificate) to be one of these.
    #[arg(long)]
    pcr8: Vec<String>,
    /// The role that administers the key (never uses it).
    #[arg(long)]
    key_admin_role: String,
    /// The parent instance's role (unwraps only with attestation).
    #[arg(long)]
    instance_role: String,
    /// Write the policy here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `assess` arguments. Expected PCR0s also come from the global `--allow-pcr0`.
#[derive(Debug, Args)]
pub(crate) struct AssessArgs {
    /// The image that should be running: its PCR0, PCR1, PCR2 (and PCR8) are expected.
    #[arg(long)]
    eif: Option<PathBuf>,
    /// The KMS key policy (`aws kms get-key-policy --key-id … --policy-name default --output text`).
    #[arg(long)]
    key_policy: Option<PathBuf>,
    /// The key store: the SQLite database path, or the PostgreSQL URL the host uses.
    #[arg(long)]
    store: Option<String>,
    /// The parent's vsock-proxy allow-list (YAML).
    #[arg(long)]
    vsock_proxy_config: Option<PathBuf>,
    /// Write the report as Markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, Error> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .map_err(|_| Error::InvalidArgument(what))?;
        return Ok(bytes);
    }
    std::fs::read(path).map_err(|_| Error::InvalidArgument(what))
}

fn measure(path: &Path) -> Result<eif::ImageMeasurements, Error> {
    let file =
        std::fs::File::open(path).map_err(|_| Error::InvalidArgument("cannot read --eif"))?;
    eif::measure(std::io::BufReader::new(file))
        .map_err(|_| Error::InvalidArgument("--eif is not a well-formed enclave image"))
}

fn measurements_json(m: &eif::ImageMeasurements) -> Value {
    let mut out = json!({
        "PCR0": hex::encode(m.pcr0), "PCR1": hex::encode(m.pcr1), "PCR2": hex::encode(m.pcr2),
    });
    if let Some(pcr8) = m.pcr8 {
        out["PCR8"] = json!(hex::encode(pcr8));
    }
    out
}

/// `pcrs`: the registers of an image, measured or as `describe-eif` printed them.
pub(crate) fn pcrs(source: &PcrSource) -> Result<Value, Error> {
    if let Some(path) = &source.eif {
        return Ok(measurements_json(&measure(path)?));
    }
    let path = source
        .describe_eif
        .as_deref()
        .expect("clap group requires one qed");
    let described: Value = serde_json::from_slice(&read(path, "cannot read --describe-eif")?)
        .map_err(|_| Error::InvalidArgument("--describe-eif is not JSON"))?;
    let measurements = described
        .get("Measurements")
        .and_then(Value::as_object)
        .ok_or(Error::InvalidArgument("--describe-eif has no Measurements"))?;
    let mut out = serde_json::Map::new();
    for register in ["PCR0", "PCR1", "PCR2", "PCR8"] {
        if let Some(value) = measurements.get(register).and_then(Value::as_str) {
            out.insert(register.into(), json!(normalise_pcr(value)?));
        }
    }
    if !out.contains_key("PCR0") {
        return Err(Error::InvalidArgument("--describe-eif has no PCR0"));
    }
    Ok(Value::Object(out))
}

/// `kms-policy`: the key policy for the given measurements.
pub(crate) fn kms_policy(args: &KmsPolicyArgs) -> Result<Value, Error> {
    let request = KeyPolicyRequest {
        admin_role: args.key_admin_role.clone(),
        instance_role: args.instance_role.clone(),
        pcrs: BTreeMap::from([
            (0, args.pcr0.clone()),
            (1, args.pcr1.clone()),
            (2, args.pcr2.clone()),
            (3, args.pcr3.clone()),
            (8, args.pcr8.clone()),
        ]),
    };
    let policy = key_policy(&request)?;
    if let Some(out) = &args.out {
        let text = serde_json::to_string_pretty(&policy).expect("JSON values serialize qed");
        std::fs::write(out, text + "\n")
            .map_err(|_| Error::InvalidArgument("cannot write --out"))?;
        return Ok(json!({ "written": out }));
    }
    Ok(policy)
}

fn store_observation(store: &str) -> Result<StoreObservation, Error> {
    if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        let sslmode = store
            .split_once('?')
            .map(|(_, query)| query)
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("sslmode=").map(str::to_owned));
        return Ok(StoreObservation::Postgres { sslmode });
    }
    use std::os::unix::fs::MetadataExt as _;
    let path = Path::new(store.strip_prefix("sqlite://").unwrap_or(store));
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.mode())
            .map_err(|_| Error::InvalidArgument("cannot read --store's permissions"))
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(StoreObservation::Sqlite {
        file_mode: mode(path)?,
        dir_mode: mode(dir)?,
    })
}

/// `assess`: observes the deployment, judges it, writes the report. Fails (after writing and
/// printing the report) when any item fails.
pub(crate) async fn assess(
    args: &AssessArgs,
    client: &Client,
    endpoint: String,
    transport: Transport,
    allow_pcr0: &[String],
    dev_root: Option<&Path>,
    max_age_secs: u64,
) -> Result<Value, Error> {
    let mut expected: Vec<PcrSet> = Vec::new();
    if let Some(path) = &args.eif {
        let m = measure(path)?;
        let mut set = PcrSet::from([
            (0, m.pcr0.to_vec()),
            (1, m.pcr1.to_vec()),
            (2, m.pcr2.to_vec()),
        ]);
        if let Some(pcr8) = m.pcr8 {
            set.insert(8, pcr8.to_vec());
        }
        expected.push(set);
    }
    for pcr0 in allow_pcr0 {
        let value = hex::decode(normalise_pcr(pcr0)?).expect("normalised hex qed");
        expected.push(PcrSet::from([(0, value)]));
    }
    let development_root = dev_root
        .map(|p| {
            TrustAnchor::development_from_der_or_pem(&read(p, "cannot read --dev-root")?)
                .ok_or(Error::InvalidArgument("--dev-root is not a certificate"))
        })
        .transpose()?;
    let key_policy = args
        .key_policy
        .as_deref()
        .map(|p| {
            serde_json::from_slice::<Value>(&read(p, "cannot read --key-policy")?)
                .map_err(|_| Error::InvalidArgument("--key-policy is not JSON"))
        })
        .transpose()?;
    let vsock_proxy_allowlist = args
        .vsock_proxy_config
        .as_deref()
        .map(|p| {
            String::from_utf8(read(p, "cannot read --vsock-proxy-config")?)
                .map_err(|_| Error::InvalidArgument("--vsock-proxy-config is not text"))
        })
        .transpose()?;
    let attestation = client
        .attestation_evidence()
        .await
        .map_err(|e| e.to_string());
    let observations = Observations {
        endpoint,
        now: std::time::SystemTime::now(),
        expected,
        attestation,
        development_root,
        max_age: std::time::Duration::from_secs(max_age_secs),
        key_policy,
        transport,
        store: args.store.as_deref().map(store_observation).transpose()?,
        vsock_proxy_allowlist,
    };
    let report = assess::assess(&observations);
    let value = serde_json::to_value(&report).expect("the report serializes qed");
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|_| Error::InvalidArgument("cannot write the report"))
    };
    if let Some(path) = &args.markdown {
        write(path, report.markdown())?;
    }
    if let Some(path) = &args.json {
        write(
            path,
            serde_json::to_string_pretty(&value).expect("JSON values serialize qed") + "\n",
        )?;
    }
    if report.summary.get("FAIL").copied().unwrap_or(0) > 0 {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON values serialize qed")
        );
        return Err(Error::Verification(
            "the deployment fails at least one item",
        ));
    }
    Ok(value)
}
