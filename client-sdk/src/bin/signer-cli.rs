//! `signer-cli`: the SDK's calls from the command line, printing JSON.

#[path = "signer-cli/deploy.rs"]
mod deploy;
#[path = "signer-cli/hd.rs"]
mod hd;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use signer_client::attestation::{AttestationPolicy, TrustAnchor};
use signer_client::deployment::assess::Transport;
use signer_client::policy::EthereumRulesJson;
use signer_client::stamper::{api_key_text, parse_api_key};
use signer_client::{
    Address, ApiKeyPair, ApiKeyScheme, Client, ClientConfig, ClientTls, Error, Stamper, pb,
};

/// Command-line client of the signer. Every signature is verified before it is printed.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The host's public API.
    #[arg(
        long,
        global = true,
        env = "SIGNER_ENDPOINT",
        default_value = "tcp://127.0.0.1:50051"
    )]
    endpoint: Address,
    /// Use TLS, trusting this CA certificate (PEM).
    #[arg(long, global = true, env = "SIGNER_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// The server name in the host's certificate.
    #[arg(
        long,
        global = true,
        default_value = "localhost",
        env = "SIGNER_TLS_DOMAIN"
    )]
    tls_domain: String,
    /// Client certificate (PEM) for hosts that require mutual TLS; needs --tls-key.
    #[arg(long, global = true, requires = "tls_key", env = "SIGNER_TLS_CERT")]
    tls_cert: Option<std::path::PathBuf>,
    /// Client private key (PEM).
    #[arg(long, global = true, env = "SIGNER_TLS_KEY")]
    tls_key: Option<std::path::PathBuf>,
    /// The deployment to stamp for; the attested enclave must serve it.
    #[arg(
        long,
        global = true,
        env = "SIGNER_DEPLOYMENT_ID",
        default_value = "local-dev"
    )]
    deployment_id: String,
    /// API key (PKCS#8 PEM, Ed25519 or P-256) that stamps every request; repeat (or separate
    /// with commas) where one caller holds a quorum.
    #[arg(long, global = true, env = "SIGNER_API_KEY", value_delimiter = ',')]
    api_key: Vec<std::path::PathBuf>,
    /// A JSON file of the highest policy version seen per key: read before the command and
    /// written after it, so a rolled-back policy is refused across runs.
    #[arg(long, global = true, env = "SIGNER_POLICY_VERSIONS")]
    policy_versions: Option<std::path::PathBuf>,
    /// An allowed enclave PCR0 (hex, 48 bytes); repeat for rolling deployments. Calls that
    /// return public keys verify them against an enclave attested with one of these.
    #[arg(
        long = "allow-pcr0",
        global = true,
        env = "SIGNER_ALLOW_PCR0",
        value_delimiter = ','
    )]
    allow_pcr0: Vec<String>,
    /// Trust this development root (DER or PEM certificate) instead of the AWS Nitro root.
    /// Only for the local stack's development attestor.
    #[arg(long, global = true, env = "SIGNER_DEV_ROOT")]
    dev_root: Option<std::path::PathBuf>,
    /// Oldest acceptable attestation document, in seconds.
    #[arg(long, global = true, default_value_t = 300)]
    max_age_secs: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Read the stored audit trail and check it: each boot's signing key through its
    /// attestation document (--allow-pcr0, --dev-root), every entry's signature, and each
    /// boot's hash chain. Exits non-zero and lists the problems if anything does not hold.
    Verify,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print an enclave image's measurements (PCR0, PCR1, PCR2 and, when signed, PCR8), read
    /// from the EIF or from `nitro-cli describe-eif` JSON. Needs no host.
    Pcrs(deploy::PcrSource),
    /// Write the KMS key policy that lets only enclaves with these measurements unwrap. Needs
    /// no host.
    KmsPolicy(deploy::KmsPolicyArgs),
    /// Assess the running deployment: measurements against the expected image, the AWS Nitro
    /// root, debug mode, attestation freshness and clock skew, the KMS key policy, the
    /// enclave-to-KMS path, TLS on the public API and the store's permissions; each item
    /// PASS, WARN or FAIL with its reason. Exits non-zero when any item fails.
    Assess(deploy::AssessArgs),
    /// The enclave-signed audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Generate an API key pair into a new 0600 file and print its public key.
    GenerateApiKey {
        /// The file to create (PKCS#8 PEM).
        #[arg(long)]
        out: std::path::PathBuf,
        /// `ed25519` or `p256`.
        #[arg(long, default_value = "ed25519")]
        scheme: String,
    },
    /// Print the public half of an API key file (`ed25519:<hex>` or `p256:<hex>`).
    PublicApiKey {
        /// The key file (PKCS#8 PEM).
        file: std::path::PathBuf,
    },
    /// Create a keyring. The --api-key(s) must hold a quorum of the enclave's keyring creators
    /// and every admin named (each admin's stamp is its proof of possession and consent).
    CreateKeyring {
        /// An admin's public key (`ed25519:<hex>` or `p256:<hex>`); repeat. Default: the
        /// --api-key(s).
        #[arg(long = "admin")]
        admins: Vec<String>,
        /// Admins needed per key creation.
        #[arg(long, default_value_t = 1)]
        threshold: u32,
    },
    /// Import an existing secp256k1 secret (32 bytes of hex in a file), HPKE-encrypted to the
    /// attested enclave and bound to the keyring and policy.
    ImportKey {
        /// File holding the secret as 64 hex digits.
        #[arg(long)]
        secret_file: std::path::PathBuf,
        /// A label for your own bookkeeping.
        #[arg(long, default_value = "")]
        label: String,
        /// Keyring to import into.
        #[arg(long, env = "SIGNER_KEYRING")]
        keyring: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Create a wallet key inside the enclave.
    CreateKey {
        /// A label for your own bookkeeping.
        #[arg(long, default_value = "")]
        label: String,
        /// Keyring to create it in.
        #[arg(long, env = "SIGNER_KEYRING")]
        keyring: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Replace a key's policy (the --api-key(s) must meet its current admin quorum), content
    /// rules included (--ethereum-rules).
    #[command(visible_alias = "set-policy")]
    UpdatePolicy {
        /// The key id.
        key: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Print a key's public identity.
    Pubkey {
        /// The key id.
        key: String,
    },
    /// List keys, oldest first.
    List {
        /// Keys per page (1 to 1000).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// Token from the previous page.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// ECDSA-sign a 32-byte digest (hex).
    Sign {
        /// The key id.
        #[arg(long)]
        key: String,
        /// The digest, 64 hex digits.
        #[arg(long)]
        digest: String,
    },
    /// Fetch the enclave's attestation document for a fresh nonce, verify it, and print the
    /// verified PCRs and enclave identity. Fails closed: without --allow-pcr0 nothing is
    /// accepted.
    Attest,
    /// Sign an Ethereum transaction the enclave reads and judges. FILE is the usual JSON
    /// transaction (`chainId`, `nonce`, `to`, `value`, `gas`, `maxFeePerGas`,
    /// `maxPriorityFeePerGas` or `gasPrice`, `input`, `accessList`, `authorizationList`), every
    /// field the type needs given. Prints the signed transaction, ready to broadcast.
    SignTx {
        /// The key id.
        #[arg(long)]
        key: String,
        /// The transaction, JSON.
        #[arg(long)]
        tx: std::path::PathBuf,
    },
    /// Sign an EIP-191 `personal_sign` message.
    SignMessage {
        /// The key id.
        #[arg(long)]
        key: String,
        /// The message, UTF-8 (or hex with --hex).
        #[arg(long)]
        message: String,
        /// The message is hex.
        #[arg(long)]
        hex: bool,
    },
    /// Sign EIP-712 typed data (the standard JSON: types, primaryType, domain, message).
    SignTypedData {
        /// The key id.
        #[arg(long)]
        key: String,
        /// The typed data, JSON.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// BIP-340-sign a message (hex).
    SignSchnorr {
        /// The key id.
        #[arg(long)]
        key: String,
        /// The message, hex.
        #[arg(long)]
        message: String,
    },
    #[command(flatten)]
    Hd(hd::HdCommand),
}

/// A key policy from the command line. Without --approver the --api-key(s) approve; without
/// --admin they administer.
#[derive(Debug, Args)]
struct PolicyArgs {
    /// An API key that approves signatures (`ed25519:<hex>` or `p256:<hex>`); repeat.
    #[arg(long = "approver")]
    approvers: Vec<String>,
    /// Approvers needed per signature.
    #[arg(long, default_value_t = 1)]
    threshold: u32,
    /// An API key that may change the policy; repeat.
    #[arg(long = "admin")]
    admins: Vec<String>,
    /// Admins needed per policy change.
    #[arg(long, default_value_t = 1)]
    admin_threshold: u32,
    /// Make the policy permanent: no admins at all.
    #[arg(long, conflicts_with = "admins")]
    no_admins: bool,
    /// Allowed signature schemes: `ecdsa` and/or `schnorr`; repeat. Default: both.
    #[arg(long = "scheme")]
    schemes: Vec<String>,
    /// Most signatures per minute (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_signatures_per_minute: u32,
    /// Ethereum content rules, a JSON file (chain_ids, destinations, max_value_wei, tokens,
    /// tiers, …; see the SDK's `EthereumRulesJson`). Closes blind signing unless it allows it.
    #[arg(long)]
    ethereum_rules: Option<std::path::PathBuf>,
}

impl PolicyArgs {
    fn policy(&self, own: &[pb::ApiKey]) -> Result<pb::Policy, Error> {
        let keys = |texts: &[String]| -> Result<Vec<pb::ApiKey>, Error> {
            if texts.is_empty() {
                return Ok(own.to_vec());
            }
            texts.iter().map(|t| parse_api_key(t)).collect()
        };
        let schemes = if self.schemes.is_empty() {
            vec!["ecdsa".to_owned(), "schnorr".to_owned()]
        } else {
            self.schemes.clone()
        };
        let schemes = schemes
            .iter()
            .map(|s| match s.as_str() {
                "ecdsa" => Ok(pb::SignatureScheme::EcdsaSecp256k1.into()),
                "schnorr" => Ok(pb::SignatureScheme::Bip340Schnorr.into()),
                _ => Err(Error::InvalidArgument("--scheme must be ecdsa or schnorr")),
            })
            .collect::<Result<_, _>>()?;
        let (admins, admin_threshold) = if self.no_admins {
            (Vec::new(), 0)
        } else {
            (keys(&self.admins)?, self.admin_threshold)
        };
        Ok(pb::Policy {
            version: 0,
            approvers: keys(&self.approvers)?,
            threshold: self.threshold,
            schemes,
            max_signatures_per_minute: self.max_signatures_per_minute,
            admins,
            admin_threshold,
            hd: None,
            bitcoin: None,
            ethereum: self
                .ethereum_rules
                .as_ref()
                .map(|path| {
                    let text = std::fs::read(path)
                        .map_err(|_| Error::InvalidArgument("cannot read --ethereum-rules"))?;
                    serde_json::from_slice::<EthereumRulesJson>(&text)
                        .map_err(|_| {
                            Error::InvalidArgument("--ethereum-rules is not valid rules JSON")
                        })?
                        .to_proto()
                })
                .transpose()?,
        })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(value) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).expect("JSON values serialize qed")
            );
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            let code = error.code().map(|c| format!("{c:?}"));
            eprintln!("{}", json!({ "error": error.to_string(), "code": code }));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<serde_json::Value, Error> {
    match &cli.command {
        Command::Pcrs(source) => return deploy::pcrs(source),
        Command::KmsPolicy(args) => return deploy::kms_policy(args),
        _ => {}
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|_| Error::InvalidArgument("cannot read a TLS file"))
    };
    let mut config = ClientConfig::new(cli.endpoint.clone(), cli.deployment_id.clone());
    if let Some(ca) = &cli.tls_ca {
        let identity = match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        config.tls = Some(ClientTls {
            ca_pem: read(ca)?,
            domain: cli.tls_domain.clone(),
            identity,
        });
    }
    let own_keys = if cli.api_key.is_empty() {
        Vec::new()
    } else {
        let paths: Vec<&std::path::Path> = cli.api_key.iter().map(|p| p.as_path()).collect();
        let stamper = Stamper::from_files(&paths)?;
        let public = stamper.public_keys();
        config.stamper = Some(std::sync::Arc::new(stamper));
        public
    };
    if let Some(path) = &cli.policy_versions {
        config.known_policy_versions = read_versions(path)?;
    }
    let policy = attestation_policy(&cli)?;
    config.enclave = policy.clone();
    let client = Client::connect(config).await?;
    let value = command(&cli, &client, &own_keys, policy).await;
    if let Some(path) = &cli.policy_versions {
        write_versions(path, &client)?;
    }
    value
}

fn read_versions(path: &std::path::Path) -> Result<std::collections::HashMap<String, u64>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|_| Error::InvalidArgument("--policy-versions is not a JSON map of versions")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(_) => Err(Error::InvalidArgument("cannot read --policy-versions")),
    }
}

fn write_versions(path: &std::path::Path, client: &Client) -> Result<(), Error> {
    let versions: std::collections::BTreeMap<_, _> = client.policy_versions().into_iter().collect();
    let text = serde_json::to_string_pretty(&versions).expect("JSON values serialize qed");
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|_| Error::InvalidArgument("cannot write --policy-versions"))
}

async fn command(
    cli: &Cli,
    client: &Client,
    own_keys: &[pb::ApiKey],
    policy: Option<AttestationPolicy>,
) -> Result<serde_json::Value, Error> {
    let value = match &cli.command {
        Command::Pcrs(_) | Command::KmsPolicy(_) => unreachable!("answered without a host"),
        Command::Assess(args) => {
            let transport = match (&cli.tls_ca, &cli.tls_cert) {
                (None, _) => Transport::Plaintext,
                (Some(_), None) => Transport::Tls,
                (Some(_), Some(_)) => Transport::MutualTls,
            };
            deploy::assess(
                args,
                client,
                cli.endpoint.to_string(),
                transport,
                &cli.allow_pcr0,
                cli.dev_root.as_deref(),
                cli.max_age_secs,
            )
            .await?
        }
        Command::GenerateApiKey { out, scheme } => {
            let scheme = match scheme.as_str() {
                "ed25519" => ApiKeyScheme::Ed25519,
                "p256" => ApiKeyScheme::P256,
                _ => return Err(Error::InvalidArgument("--scheme must be ed25519 or p256")),
            };
            let key = ApiKeyPair::generate(scheme)?;
            key.save(out)?;
            json!({ "file": out, "public_key": key.public_text() })
        }
        Command::PublicApiKey { file } => {
            json!({ "public_key": ApiKeyPair::load(file)?.public_text() })
        }
        Command::CreateKeyring { admins, threshold } => {
            let admins = if admins.is_empty() {
                if own_keys.is_empty() {
                    return Err(Error::NotConfigured("--admin or --api-key"));
                }
                own_keys.to_vec()
            } else {
                admins
                    .iter()
                    .map(|a| parse_api_key(a))
                    .collect::<Result<_, _>>()?
            };
            json!({ "keyring_id": client.create_keyring(admins, *threshold).await? })
        }
        Command::ImportKey {
            secret_file,
            label,
            keyring,
            policy,
        } => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(secret_file)
                    .map_err(|_| Error::InvalidArgument("cannot read --secret-file"))?,
            );
            let mut secret = zeroize::Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(text.trim().trim_start_matches("0x"), secret.as_mut())
                .map_err(|_| Error::InvalidArgument("--secret-file must hold 64 hex digits"))?;
            let policy = policy.policy(own_keys)?;
            json!(
                client
                    .import_key(keyring, label, Some(policy), &secret)
                    .await?
            )
        }
        Command::CreateKey {
            label,
            keyring,
            policy,
        } => json!(
            client
                .create_key_with(keyring, label, policy.policy(own_keys)?)
                .await?
        ),
        Command::UpdatePolicy { key, policy } => {
            json!(client.update_policy(key, policy.policy(own_keys)?).await?)
        }
        Command::Pubkey { key } => json!(client.fresh_public_key(key).await?),
        Command::List {
            page_size,
            page_token,
        } => {
            let (keys, next) = client.list_keys(*page_size, page_token).await?;
            json!({ "keys": keys, "next_page_token": next })
        }
        Command::Sign { key, digest } => {
            let digest: [u8; 32] = hex::decode(digest.trim_start_matches("0x"))
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or(Error::InvalidArgument("--digest must be 32 bytes of hex"))?;
            let signature = client.sign_digest(key, digest).await?;
            json!({ "key_id": key, "r": hex::encode(signature.r), "s": hex::encode(signature.s), "v": signature.v,
                    "signature65": hex::encode(signature.to_bytes65()) })
        }
        Command::SignTx { key, tx } => {
            let text = std::fs::read(tx).map_err(|_| Error::InvalidArgument("cannot read --tx"))?;
            let unsigned = unsigned_transaction(&text)?;
            json!(client.sign_transaction(key, &unsigned).await?)
        }
        Command::SignMessage { key, message, hex } => {
            let bytes = if *hex {
                hex::decode(message.trim_start_matches("0x"))
                    .map_err(|_| Error::InvalidArgument("--message is not hex"))?
            } else {
                message.as_bytes().to_vec()
            };
            json!(client.sign_personal_message(key, &bytes).await?)
        }
        Command::SignTypedData { key, file } => {
            let json = std::fs::read_to_string(file)
                .map_err(|_| Error::InvalidArgument("cannot read --file"))?;
            json!(client.sign_typed_data(key, &json).await?)
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let policy = policy.ok_or(Error::NotConfigured("--allow-pcr0"))?;
            let (entries, boots) = client.read_audit_trail().await?;
            let report = signer_client::audit::verify_trail(&entries, &boots, &policy);
            if !report.intact() {
                // The report (with every problem) on stdout; the failure on stderr.
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("JSON values serialize qed")
                );
                return Err(Error::Verification("the audit trail is not intact"));
            }
            json!(report)
        }
        Command::Attest => {
            let policy = policy.ok_or(Error::NotConfigured("--allow-pcr0"))?;
            let attested = client.attest(&policy).await?;
            let (verified, identity) = (attested.document, attested.identity);
            let pcrs: std::collections::BTreeMap<String, String> = verified
                .pcrs
                .iter()
                .map(|(i, v)| (i.to_string(), hex::encode(v)))
                .collect();
            let timestamp_ms = verified
                .timestamp
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let config = &identity.config;
            let creators = config.keyring_creators.clone().unwrap_or_default();
            json!({ "verified": true, "module_id": verified.module_id, "timestamp_ms": timestamp_ms, "pcrs": pcrs,
                    "nonce": verified.nonce.map(hex::encode),
                    "enclave_signing_key": hex::encode(identity.signing_public_key),
                    "enclave_hpke_key": hex::encode(identity.hpke_public_key),
                    "boot_time_ms": identity.boot_time_ms,
                    "deployment_id": identity.deployment_id,
                    "config": {
                        "keyring_creators": creators.admins.iter().map(api_key_text).collect::<Vec<_>>(),
                        "keyring_creator_threshold": creators.threshold,
                        "max_keyrings": config.max_keyrings, "max_keys": config.max_keys,
                        "max_policies": config.max_policies,
                        "replay_window_ms": config.replay_window_ms, "future_skew_ms": config.future_skew_ms,
                        "boot_skew_ms": config.boot_skew_ms, "nonce_capacity": config.nonce_capacity,
                        "nonce_quota_per_key": config.nonce_quota_per_key,
                        "provider": config.provider, "kms_key_arn": config.kms_key_arn,
                    } })
        }
        Command::SignSchnorr { key, message } => {
            let message = hex::decode(message.trim_start_matches("0x"))
                .map_err(|_| Error::InvalidArgument("--message must be hex"))?;
            let signature = client.sign_schnorr(key, &message).await?;
            json!({ "key_id": key, "signature": hex::encode(signature.0) })
        }
        Command::Hd(command) => hd::run(command, client, own_keys).await?,
    };
    Ok(value)
}

/// The attestation policy from --allow-pcr0 / --dev-root, if any PCR0 is allowed.
fn attestation_policy(cli: &Cli) -> Result<Option<AttestationPolicy>, Error> {
    if cli.allow_pcr0.is_empty() {
        return Ok(None);
    }
    let allowed_pcrs = cli
        .allow_pcr0
        .iter()
        .map(|hex_pcr| {
            let value = hex::decode(hex_pcr).ok().filter(|v| v.len() == 48).ok_or(
                Error::InvalidArgument("--allow-pcr0 must be 48 bytes of hex"),
            )?;
            Ok(std::collections::BTreeMap::from([(0u16, value)]))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let root = match &cli.dev_root {
        None => TrustAnchor::aws_nitro_g1(),
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|_| Error::InvalidArgument("cannot read --dev-root"))?;
            TrustAnchor::development_from_der_or_pem(&bytes)
                .ok_or(Error::InvalidArgument("--dev-root is not a certificate"))?
        }
    };
    Ok(Some(AttestationPolicy {
        root,
        allowed_pcrs,
        expected_nonce: None,
        max_age: std::time::Duration::from_secs(cli.max_age_secs),
    }))
}

/// The signing encoding of a JSON transaction, every field its type needs given.
fn unsigned_transaction(json: &[u8]) -> Result<Vec<u8>, Error> {
    use alloy_consensus::SignableTransaction as _;
    let request: alloy_rpc_types_eth::TransactionRequest = serde_json::from_slice(json)
        .map_err(|_| Error::InvalidArgument("--tx is not a JSON transaction"))?;
    let typed = request.build_typed_tx().map_err(|_| {
        Error::InvalidArgument("--tx lacks a field its type needs (chainId, nonce, gas, fees)")
    })?;
    let mut out = Vec::new();
    match typed {
        alloy_consensus::TypedTransaction::Legacy(tx) => tx.encode_for_signing(&mut out),
        alloy_consensus::TypedTransaction::Eip2930(tx) => tx.encode_for_signing(&mut out),
        alloy_consensus::TypedTransaction::Eip1559(tx) => tx.encode_for_signing(&mut out),
        alloy_consensus::TypedTransaction::Eip7702(tx) => tx.encode_for_signing(&mut out),
        alloy_consensus::TypedTransaction::Eip4844(_) => {
            return Err(Error::InvalidArgument("blob transactions are not signed"));
        }
    }
    Ok(out)
}
