//! A watch-only wallet over an HD root's verified account xpubs, as an exchange's backend would
//! hold one: it builds PSBTs whose inputs and change name the root by fingerprint and path, and
//! finalises what the enclave signed. For the end-to-end tests and the benchmark.

use bitcoin::bip32::{ChildNumber, DerivationPath, Fingerprint};
use bitcoin::hashes::Hash as _;
use bitcoin::psbt::{Input, Output, Psbt};
use bitcoin::script::PushBytesBuf;
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey, XOnlyPublicKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Amount, CompressedPublicKey, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness, absolute, transaction,
};
use signer_client::Client;
use signer_client::hd::{AccountXpub, HARDENED, parse_path};

/// How a key is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// BIP-84, native SegWit.
    P2wpkh,
    /// BIP-49, SegWit in P2SH.
    P2shP2wpkh,
    /// BIP-86, Taproot key path.
    P2tr,
}

impl Kind {
    /// The account (testnet coin type) whose subtree the root's policy allows.
    pub fn account(self) -> Vec<u32> {
        parse_path(match self {
            Kind::P2wpkh => "m/84'/1'/0'",
            Kind::P2shP2wpkh => "m/49'/1'/0'",
            Kind::P2tr => "m/86'/1'/0'",
        })
        .expect("a BIP-32 path qed")
    }
}

/// The root's accounts, by verified xpub.
pub struct Wallet {
    /// The root's BIP-32 fingerprint.
    pub fingerprint: Fingerprint,
    xpubs: Vec<(Kind, AccountXpub)>,
    next_outpoint: std::cell::Cell<u32>,
}

fn derivation(path: &[u32]) -> DerivationPath {
    path.iter().map(|&i| ChildNumber::from(i)).collect()
}

impl Wallet {
    /// Fetches (and so verifies) the three accounts' xpubs of `root`.
    pub async fn open(client: &Client, root: &str) -> Wallet {
        let info = client
            .public_key(root)
            .await
            .expect("the root's public key");
        let fingerprint = Fingerprint::from(info.hd.expect("an HD root").root_fingerprint);
        let mut xpubs = Vec::new();
        for kind in [Kind::P2wpkh, Kind::P2shP2wpkh, Kind::P2tr] {
            let account = client
                .derived_key(root, &kind.account())
                .await
                .expect("the account's xpub");
            xpubs.push((
                kind,
                account
                    .hd
                    .and_then(|hd| hd.xpub)
                    .expect("an account statement carries its xpub"),
            ));
        }
        Wallet {
            fingerprint,
            xpubs,
            next_outpoint: std::cell::Cell::new(0),
        }
    }

    /// The key at `chain/index` of `kind`'s account, and its full path.
    pub fn key(&self, kind: Kind, chain: u32, index: u32) -> (CompressedPublicKey, Vec<u32>) {
        let xpub = &self
            .xpubs
            .iter()
            .find(|(k, _)| *k == kind)
            .expect("every kind has an account qed")
            .1;
        let mut path = kind.account();
        path.extend([chain, index]);
        (
            xpub.derive(&[chain, index])
                .expect("a non-hardened index qed"),
            path,
        )
    }

    /// The script paying that key.
    pub fn script(&self, kind: Kind, chain: u32, index: u32) -> ScriptBuf {
        script_for(kind, &self.key(kind, chain, index).0)
    }

    fn outpoint(&self) -> OutPoint {
        let n = self.next_outpoint.get();
        self.next_outpoint.set(n + 1);
        OutPoint {
            txid: Txid::from_byte_array(
                bitcoin::hashes::sha256::Hash::hash(&n.to_le_bytes()).to_byte_array(),
            ),
            vout: n % 3,
        }
    }

    /// An input spending `value` sats paid earlier to the receiving key `index` of `kind`, with
    /// the origin data that names the root.
    pub fn input(&self, kind: Kind, index: u32, value: u64) -> (TxIn, Input) {
        let (key, path) = self.key(kind, 0, index);
        let mut input = Input {
            witness_utxo: Some(TxOut {
                value: Amount::from_sat(value),
                script_pubkey: script_for(kind, &key),
            }),
            ..Default::default()
        };
        self.name(
            kind,
            &key,
            &path,
            &mut input.bip32_derivation,
            &mut input.tap_key_origins,
        );
        if kind == Kind::P2shP2wpkh {
            input.redeem_script = Some(ScriptBuf::new_p2wpkh(&key.wpubkey_hash()));
        }
        if kind == Kind::P2tr {
            input.tap_internal_key = Some(XOnlyPublicKey::from(key.0));
        }
        (txin(self.outpoint()), input)
    }

    /// A change output of `value` sats to the change key `index` of `kind`, naming the root.
    pub fn change(&self, kind: Kind, index: u32, value: u64) -> (TxOut, Output) {
        let (key, path) = self.key(kind, 1, index);
        let mut output = Output::default();
        self.name(
            kind,
            &key,
            &path,
            &mut output.bip32_derivation,
            &mut output.tap_key_origins,
        );
        if kind == Kind::P2shP2wpkh {
            output.redeem_script = Some(ScriptBuf::new_p2wpkh(&key.wpubkey_hash()));
        }
        (
            TxOut {
                value: Amount::from_sat(value),
                script_pubkey: script_for(kind, &key),
            },
            output,
        )
    }

    fn name(
        &self,
        kind: Kind,
        key: &CompressedPublicKey,
        path: &[u32],
        bip32: &mut std::collections::BTreeMap<
            bitcoin::secp256k1::PublicKey,
            (Fingerprint, DerivationPath),
        >,
        taproot: &mut std::collections::BTreeMap<
            XOnlyPublicKey,
            (Vec<bitcoin::TapLeafHash>, (Fingerprint, DerivationPath)),
        >,
    ) {
        let origin = (self.fingerprint, derivation(path));
        if kind == Kind::P2tr {
            taproot.insert(XOnlyPublicKey::from(key.0), (Vec::new(), origin));
        } else {
            bip32.insert(key.0, origin);
        }
    }
}

/// The script paying `key` as `kind`.
pub fn script_for(kind: Kind, key: &CompressedPublicKey) -> ScriptBuf {
    let p2wpkh = ScriptBuf::new_p2wpkh(&key.wpubkey_hash());
    match kind {
        Kind::P2wpkh => p2wpkh,
        Kind::P2shP2wpkh => p2wpkh.to_p2sh(),
        Kind::P2tr => ScriptBuf::new_p2tr(
            &Secp256k1::verification_only(),
            XOnlyPublicKey::from(key.0),
            None,
        ),
    }
}

fn txin(previous_output: OutPoint) -> TxIn {
    TxIn {
        previous_output,
        script_sig: ScriptBuf::new(),
        sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
        witness: Witness::new(),
    }
}

/// A plain P2WPKH output to `script` (someone else's).
pub fn pay(script: &ScriptBuf, value: u64) -> (TxOut, Output) {
    (
        TxOut {
            value: Amount::from_sat(value),
            script_pubkey: script.clone(),
        },
        Output::default(),
    )
}

/// A P2WPKH key held by someone other than the signer (another party, a payee).
pub struct Foreign {
    /// Its secret key.
    pub secret: SecretKey,
    /// Its public key.
    pub key: CompressedPublicKey,
}

impl Foreign {
    /// The party whose secret key is `seed` repeated.
    pub fn new(seed: u8) -> Foreign {
        let secret =
            SecretKey::from_slice(&[seed; 32]).expect("a valid secret for seeds below the order");
        let key = CompressedPublicKey(secret.public_key(&Secp256k1::signing_only()));
        Foreign { secret, key }
    }

    /// Its P2WPKH script.
    pub fn script(&self) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&self.key.wpubkey_hash())
    }

    /// An input of this party's, `value` sats, with its UTXO data and no origin of the root.
    pub fn input(&self, wallet: &Wallet, value: u64) -> (TxIn, Input) {
        let input = Input {
            witness_utxo: Some(TxOut {
                value: Amount::from_sat(value),
                script_pubkey: self.script(),
            }),
            ..Default::default()
        };
        (txin(wallet.outpoint()), input)
    }

    /// Signs and finalises input `index` of `psbt` (this party's own P2WPKH input).
    pub fn sign(&self, psbt: &mut Psbt, index: usize) {
        let utxo = psbt.inputs[index]
            .witness_utxo
            .clone()
            .expect("the party's input has its UTXO");
        let sighash = SighashCache::new(&psbt.unsigned_tx)
            .p2wpkh_signature_hash(
                index,
                &utxo.script_pubkey,
                utxo.value,
                EcdsaSighashType::All,
            )
            .expect("a P2WPKH input qed");
        let signature = bitcoin::ecdsa::Signature::sighash_all(
            Secp256k1::signing_only()
                .sign_ecdsa(&Message::from_digest(sighash.to_byte_array()), &self.secret),
        );
        psbt.inputs[index].final_script_witness = Some(Witness::from_slice(&[
            signature.to_vec(),
            self.key.to_bytes().to_vec(),
        ]));
    }
}

/// An input with no PSBT data at all (for size bounds).
pub fn bare_input(wallet: &Wallet) -> (TxIn, Input) {
    (txin(wallet.outpoint()), Input::default())
}

/// A version-2 PSBT of these inputs and outputs.
pub fn psbt(inputs: Vec<(TxIn, Input)>, outputs: Vec<(TxOut, Output)>) -> Psbt {
    let (txins, inputs): (Vec<_>, Vec<_>) = inputs.into_iter().unzip();
    let (txouts, outputs): (Vec<_>, Vec<_>) = outputs.into_iter().unzip();
    let mut psbt = Psbt::from_unsigned_tx(Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: txins,
        output: txouts,
    })
    .expect("a PSBT of an unsigned transaction qed");
    psbt.inputs = inputs;
    psbt.outputs = outputs;
    psbt
}

/// Moves the enclave's signatures into final witnesses (and the P2SH script sig).
pub fn finalise(psbt: &mut Psbt, signed: &[u32]) {
    for &index in signed {
        let input = &mut psbt.inputs[usize::try_from(index).expect("an index that fits qed")];
        if let Some(signature) = input.tap_key_sig.take() {
            input.final_script_witness = Some(Witness::from_slice(&[signature.to_vec()]));
            continue;
        }
        let (key, signature) = input
            .partial_sigs
            .pop_first()
            .expect("a signed v0 input has one signature");
        input.final_script_witness =
            Some(Witness::from_slice(&[signature.to_vec(), key.to_bytes()]));
        if let Some(redeem) = input.redeem_script.take() {
            let mut push = PushBytesBuf::new();
            push.extend_from_slice(redeem.as_bytes())
                .expect("a redeem script fits a push qed");
            input.final_script_sig = Some(ScriptBuf::builder().push_slice(push).into_script());
        }
    }
}

/// Hardened index `n`.
pub const fn hardened(n: u32) -> u32 {
    n | HARDENED
}
