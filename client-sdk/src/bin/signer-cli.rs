//! `signer-cli`: the SDK's calls from the command line, printing JSON.

use clap::{Parser, Subcommand};
use serde_json::json;
use signer_client::attestation::{AttestationPolicy, TrustAnchor};
use signer_client::stamper::parse_api_key;
use signer_client::{
    Address, ApiKeyPair, ApiKeyScheme, Client, ClientConfig, ClientTls, Error, Stamper,
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
    /// API key (PKCS#8 PEM, Ed25519 or P-256) that stamps every request.
    #[arg(long, global = true, env = "SIGNER_API_KEY")]
    api_key: Option<std::path::PathBuf>,
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
enum Command {
    /// Generate an API key pair into a new 0600 file and print its public key.
    GenerateApiKey {
        /// The file to create (PKCS#8 PEM).
        #[arg(long)]
        out: std::path::PathBuf,
        /// `ed25519` or `p256`.
        #[arg(long, default_value = "ed25519")]
        scheme: String,
    },
    /// Create a keyring. Its admins (default: the --api-key) authorise key creation in it.
    CreateKeyring {
        /// An admin's public key (`ed25519:<hex>` or `p256:<hex>`); repeat. Default: --api-key.
        #[arg(long = "admin")]
        admins: Vec<String>,
        /// Admins needed per key creation.
        #[arg(long, default_value_t = 1)]
        threshold: u32,
    },
    /// Import an existing secp256k1 secret (32 bytes of hex in a file), HPKE-encrypted to the
    /// attested enclave.
    ImportKey {
        /// File holding the secret as 64 hex digits.
        #[arg(long)]
        secret_file: std::path::PathBuf,
        /// A label for your own bookkeeping.
        #[arg(long, default_value = "")]
        label: String,
        /// Keyring to import into (default: the only one).
        #[arg(long, default_value = "")]
        keyring: String,
    },
    /// Create a wallet key inside the enclave.
    CreateKey {
        /// A label for your own bookkeeping.
        #[arg(long, default_value = "")]
        label: String,
        /// Keyring to create it in (default: the only one).
        #[arg(long, default_value = "")]
        keyring: String,
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
    /// BIP-340-sign a message (hex).
    SignSchnorr {
        /// The key id.
        #[arg(long)]
        key: String,
        /// The message, hex.
        #[arg(long)]
        message: String,
    },
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
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|_| Error::InvalidArgument("cannot read a TLS file"))
    };
    let mut config = ClientConfig::new(cli.endpoint.clone());
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
    if let Some(path) = &cli.api_key {
        config.stamper = Some(std::sync::Arc::new(Stamper::from_file(path)?));
    }
    let policy = attestation_policy(&cli)?;
    config.enclave = policy.clone();
    let client = Client::connect(config).await?;
    let value = match cli.command {
        Command::GenerateApiKey { out, scheme } => {
            let scheme = match scheme.as_str() {
                "ed25519" => ApiKeyScheme::Ed25519,
                "p256" => ApiKeyScheme::P256,
                _ => return Err(Error::InvalidArgument("--scheme must be ed25519 or p256")),
            };
            let key = ApiKeyPair::generate(scheme)?;
            key.save(&out)?;
            json!({ "file": out, "public_key": key.public_text() })
        }
        Command::CreateKeyring { admins, threshold } => {
            let admins = if admins.is_empty() {
                let path = cli
                    .api_key
                    .as_ref()
                    .ok_or(Error::NotConfigured("--admin or --api-key"))?;
                vec![ApiKeyPair::load(path)?.public()]
            } else {
                admins
                    .iter()
                    .map(|a| parse_api_key(a))
                    .collect::<Result<_, _>>()?
            };
            json!({ "keyring_id": client.create_keyring(admins, threshold).await? })
        }
        Command::ImportKey {
            secret_file,
            label,
            keyring,
        } => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&secret_file)
                    .map_err(|_| Error::InvalidArgument("cannot read --secret-file"))?,
            );
            let mut secret = zeroize::Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(text.trim().trim_start_matches("0x"), secret.as_mut())
                .map_err(|_| Error::InvalidArgument("--secret-file must hold 64 hex digits"))?;
            json!(client.import_key(&keyring, &label, None, &secret).await?)
        }
        Command::CreateKey { label, keyring } => {
            json!(client.create_key_with(&keyring, &label, None).await?)
        }
        Command::Pubkey { key } => json!(client.public_key(&key).await?),
        Command::List {
            page_size,
            page_token,
        } => {
            let (keys, next) = client.list_keys(page_size, &page_token).await?;
            json!({ "keys": keys, "next_page_token": next })
        }
        Command::Sign { key, digest } => {
            let digest: [u8; 32] = hex::decode(digest.trim_start_matches("0x"))
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or(Error::InvalidArgument("--digest must be 32 bytes of hex"))?;
            let signature = client.sign_digest(&key, digest).await?;
            json!({ "key_id": key, "r": hex::encode(signature.r), "s": hex::encode(signature.s), "v": signature.v,
                    "signature65": hex::encode(signature.to_bytes65()) })
        }
        Command::Attest => {
            let policy = policy.ok_or(Error::NotConfigured("--allow-pcr0"))?;
            let verified = client.attest(&policy).await?;
            let identity = signer_client::AttestedIdentity::from_attestation(&verified).ok();
            let pcrs: std::collections::BTreeMap<String, String> = verified
                .pcrs
                .iter()
                .map(|(i, v)| (i.to_string(), hex::encode(v)))
                .collect();
            let timestamp_ms = verified
                .timestamp
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            json!({ "verified": true, "module_id": verified.module_id, "timestamp_ms": timestamp_ms, "pcrs": pcrs,
                    "nonce": verified.nonce.map(hex::encode),
                    "enclave_signing_key": identity.as_ref().map(|i| hex::encode(i.signing_public_key)),
                    "enclave_hpke_key": identity.as_ref().map(|i| hex::encode(i.hpke_public_key)) })
        }
        Command::SignSchnorr { key, message } => {
            let message = hex::decode(message.trim_start_matches("0x"))
                .map_err(|_| Error::InvalidArgument("--message must be hex"))?;
            let signature = client.sign_schnorr(&key, &message).await?;
            json!({ "key_id": key, "signature": hex::encode(signature.0) })
        }
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
