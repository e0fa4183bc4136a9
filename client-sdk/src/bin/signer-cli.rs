//! `signer-cli`: the SDK's calls from the command line, printing JSON.

use clap::{Parser, Subcommand};
use serde_json::json;
use signer_client::attestation::{AttestationPolicy, TrustAnchor};
use signer_client::{Address, Client, ClientConfig, ClientTls, Error};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// verified PCRs. Fails closed: without --allow-pcr0 nothing is accepted.
    Attest {
        /// An allowed PCR0 (hex, 48 bytes); repeat for rolling deployments.
        #[arg(long = "allow-pcr0", required = true)]
        allow_pcr0: Vec<String>,
        /// Trust this development root (DER or PEM certificate) instead of the AWS Nitro root.
        /// Only for the local stack's development attestor.
        #[arg(long)]
        dev_root: Option<std::path::PathBuf>,
        /// Oldest acceptable document, in seconds.
        #[arg(long, default_value_t = 300)]
        max_age_secs: u64,
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
    let mut config = ClientConfig::new(cli.endpoint);
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
    let client = Client::connect(config).await?;
    let value = match cli.command {
        Command::CreateKey { label, keyring } => {
            json!(client.create_key_in(&keyring, &label).await?)
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
        Command::Attest {
            allow_pcr0,
            dev_root,
            max_age_secs,
        } => {
            let allowed_pcrs = allow_pcr0
                .iter()
                .map(|hex_pcr| {
                    let value = hex::decode(hex_pcr).ok().filter(|v| v.len() == 48).ok_or(
                        Error::InvalidArgument("--allow-pcr0 must be 48 bytes of hex"),
                    )?;
                    Ok(std::collections::BTreeMap::from([(0u16, value)]))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let root = match dev_root {
                None => TrustAnchor::aws_nitro_g1(),
                Some(path) => {
                    let bytes = std::fs::read(&path)
                        .map_err(|_| Error::InvalidArgument("cannot read --dev-root"))?;
                    TrustAnchor::development_from_der_or_pem(&bytes)
                        .ok_or(Error::InvalidArgument("--dev-root is not a certificate"))?
                }
            };
            let policy = AttestationPolicy {
                root,
                allowed_pcrs,
                expected_nonce: None,
                max_age: std::time::Duration::from_secs(max_age_secs),
            };
            let verified = client.attest(&policy).await?;
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
                    "nonce": verified.nonce.map(hex::encode) })
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
