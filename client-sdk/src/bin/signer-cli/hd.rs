//! `signer-cli`'s HD and Bitcoin commands: create or import an HD root, print a verified
//! account xpub, derive deposit addresses from it offline, and sign PSBTs (base64 in and out).

use std::path::PathBuf;

use bitcoin::psbt::Psbt;
use clap::Subcommand;
use serde_json::json;
use signer_client::hd::{AccountXpub, XpubVersion, format_path, parse_path};
use signer_client::policy::BitcoinRulesJson;
use signer_client::{Client, Error, pb};

use crate::PolicyArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum HdCommand {
    /// Create an HD root (BIP-32) inside the enclave, whose keys may be used only under the
    /// --subtree paths.
    CreateHdRoot {
        /// A label for your own bookkeeping.
        #[arg(long, default_value = "")]
        label: String,
        /// Keyring to create it in.
        #[arg(long, env = "SIGNER_KEYRING")]
        keyring: String,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Import an HD root from a BIP-39 English mnemonic (a file), HPKE-encrypted to the
    /// attested enclave; the enclave keeps the root, not the phrase.
    ImportMnemonic {
        /// File holding the mnemonic phrase.
        #[arg(long)]
        mnemonic_file: PathBuf,
        /// File holding the BIP-39 passphrase (none if absent).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// A label for your own bookkeeping.
        #[arg(long, default_value = "")]
        label: String,
        /// Keyring to import into.
        #[arg(long, env = "SIGNER_KEYRING")]
        keyring: String,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Print the extended public key at a path of an HD root (typically a hardened account,
    /// `m/84'/0'/0'`), verified against the attested enclave's signed statement.
    Xpub {
        /// The HD root's key id.
        #[arg(long)]
        root: String,
        /// The path, BIP-32 notation.
        #[arg(long)]
        path: String,
        /// Write it as `xpub`, `zpub` (BIP-84), `tpub` or `vpub`. Default: as the enclave does.
        #[arg(long)]
        version: Option<String>,
    },
    /// Derive a deposit address from an account's extended public key, without the service.
    DeriveAddress {
        /// The account's `xpub`, `zpub`, `tpub` or `vpub`.
        #[arg(long)]
        xpub: String,
        /// 0 for receiving, 1 for change.
        #[arg(long, default_value_t = 0)]
        chain: u32,
        /// The address index.
        #[arg(long)]
        index: u32,
        /// `p2wpkh` (BIP-84) or `p2tr` (BIP-86).
        #[arg(long, default_value = "p2wpkh")]
        kind: String,
        /// Address prefix: `bc`, `tb` or `bcrt`. Default: the key version's network.
        #[arg(long)]
        hrp: Option<String>,
    },
    /// Sign the inputs of a PSBT (base64, BIP-174) that belong to an HD root, under its Bitcoin
    /// rules. Prints the PSBT with the signatures added (base64), each verified.
    SignPsbt {
        /// The HD root's key id.
        #[arg(long)]
        root: String,
        /// File holding the PSBT in base64.
        #[arg(long)]
        psbt: PathBuf,
    },
}

/// An HD root's policy: the `PolicyArgs`, its subtrees and its Bitcoin rules.
#[derive(Debug, clap::Args)]
pub(crate) struct RootArgs {
    /// A subtree whose keys the root may use (BIP-32 notation, `m/84'/0'/0'`); repeat.
    #[arg(long = "subtree", required = true)]
    subtrees: Vec<String>,
    /// Bitcoin rules, a JSON file: `network`, `destinations` (addresses), `max_sat_per_tx`,
    /// `max_sat_per_day`, `max_fee_sat`, `max_fee_rate_sat_per_vb`. Without it no PSBT is
    /// signed.
    #[arg(long)]
    bitcoin_rules: Option<PathBuf>,
    #[command(flatten)]
    policy: PolicyArgs,
}

impl RootArgs {
    fn policy(&self, own: &[pb::ApiKey]) -> Result<pb::Policy, Error> {
        let subtrees = self
            .subtrees
            .iter()
            .map(|text| parse_path(text).map(|indices| pb::DerivationPath { indices }))
            .collect::<Result<_, _>>()?;
        let bitcoin = self
            .bitcoin_rules
            .as_ref()
            .map(|path| {
                let text = std::fs::read(path)
                    .map_err(|_| Error::InvalidArgument("cannot read --bitcoin-rules"))?;
                serde_json::from_slice::<BitcoinRulesJson>(&text)
                    .map_err(|_| Error::InvalidArgument("--bitcoin-rules is not valid rules JSON"))?
                    .to_proto()
            })
            .transpose()?;
        Ok(pb::Policy {
            hd: Some(pb::HdRules { subtrees }),
            bitcoin,
            ..self.policy.policy(own)?
        })
    }
}

fn read_secret_text(
    path: &PathBuf,
    what: &'static str,
) -> Result<zeroize::Zeroizing<String>, Error> {
    std::fs::read_to_string(path)
        .map(|text| zeroize::Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned()))
        .map_err(|_| Error::InvalidArgument(what))
}

pub(crate) async fn run(
    command: &HdCommand,
    client: &Client,
    own_keys: &[pb::ApiKey],
) -> Result<serde_json::Value, Error> {
    Ok(match command {
        HdCommand::CreateHdRoot {
            label,
            keyring,
            root,
        } => json!(
            client
                .create_hd_root(keyring, label, root.policy(own_keys)?)
                .await?
        ),
        HdCommand::ImportMnemonic {
            mnemonic_file,
            passphrase_file,
            label,
            keyring,
            root,
        } => {
            let phrase = read_secret_text(mnemonic_file, "cannot read --mnemonic-file")?;
            let passphrase = match passphrase_file {
                Some(path) => read_secret_text(path, "cannot read --passphrase-file")?,
                None => zeroize::Zeroizing::new(String::new()),
            };
            json!(
                client
                    .import_mnemonic(
                        keyring,
                        label,
                        root.policy(own_keys)?,
                        phrase.trim(),
                        &passphrase
                    )
                    .await?
            )
        }
        HdCommand::Xpub {
            root,
            path,
            version,
        } => {
            let indices = parse_path(path)?;
            let key = client.derived_key(root, &indices).await?;
            let hd = key
                .hd
                .as_ref()
                .ok_or(Error::Verification("the key is not an HD root"))?;
            let mut xpub = hd
                .xpub
                .clone()
                .ok_or(Error::InvalidArgument("--path names the root itself"))?;
            if let Some(version) = version {
                xpub = xpub.with_version(version.parse::<XpubVersion>()?);
            }
            json!({ "root": root, "path": format_path(&indices), "xpub": xpub.to_string(),
                    "root_fingerprint": hex::encode(hd.root_fingerprint),
                    "public_key": hex::encode(key.public_key_compressed) })
        }
        HdCommand::DeriveAddress {
            xpub,
            chain,
            index,
            kind,
            hrp,
        } => {
            let xpub: AccountXpub = xpub.parse()?;
            let hrp = match hrp.as_deref() {
                None => None,
                Some("bc") => Some(bitcoin::KnownHrp::Mainnet),
                Some("tb") => Some(bitcoin::KnownHrp::Testnets),
                Some("bcrt") => Some(bitcoin::KnownHrp::Regtest),
                Some(_) => return Err(Error::InvalidArgument("--hrp must be bc, tb or bcrt")),
            };
            let address = match kind.as_str() {
                "p2wpkh" => xpub.p2wpkh_address(*chain, *index, hrp)?,
                "p2tr" => xpub.p2tr_address(*chain, *index, hrp)?,
                _ => return Err(Error::InvalidArgument("--kind must be p2wpkh or p2tr")),
            };
            json!({ "address": address.to_string(), "chain": chain, "index": index,
                    "public_key": hex::encode(xpub.derive(&[*chain, *index])?.to_bytes()) })
        }
        HdCommand::SignPsbt { root, psbt } => {
            let text = std::fs::read_to_string(psbt)
                .map_err(|_| Error::InvalidArgument("cannot read --psbt"))?;
            let unsigned: Psbt = text
                .trim()
                .parse()
                .map_err(|_| Error::InvalidArgument("--psbt is not a base64 PSBT"))?;
            let signed = client.sign_psbt(root, &unsigned).await?;
            json!({ "root": root, "signed_inputs": signed.signed_inputs,
                    "psbt": signed.psbt.to_string() })
        }
    })
}
