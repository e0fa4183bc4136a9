//! What a PSBT asks of an HD root, and the signatures it gets. [`Reading::new`] finds the
//! inputs whose BIP-32 origins (`bip32_derivation`, key-path `tap_key_origins`) name the root by
//! fingerprint, and the outputs that claim to be its change. Once the vault has derived those
//! keys, [`Reading::facts`] checks every claim against them (an input's script must be its key's
//! P2WPKH, P2SH-P2WPKH or BIP-86 P2TR script; a change claim that does not hold is a payment),
//! and computes amounts, fee and size from the data the PSBT commits to. [`Reading::sign`]
//! computes each sighash with rust-bitcoin (BIP-143; BIP-341 key path), tweaks Taproot keys
//! with rust-bitcoin (BIP-86: no script tree), and signs with the enclave's backend.
//!
//! What SegWit v0 trusts: BIP-143 commits only to the amount of the input being signed, so the
//! fee rules rely on the other inputs' `witness_utxo` amounts as the PSBT gives them. The body
//! is stamped by the root's approvers, so the host cannot change them; an approver's own
//! software that lies about another party's input amount can make the fee look smaller than it
//! is. Taproot inputs commit to every input's amount and script, so a lie there invalidates
//! the signature.

use std::sync::Arc;

use bitcoin::bip32::{DerivationPath, Fingerprint};
use bitcoin::hashes::Hash as _;
use bitcoin::key::{Keypair, TapTweak as _};
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{self, Secp256k1, XOnlyPublicKey};
use bitcoin::sighash::{EcdsaSighashType, Prevouts, SighashCache, TapSighashType};
use bitcoin::{CompressedPublicKey, ScriptBuf, TxOut};
use zeroize::Zeroizing;

use crate::Error;
use crate::backend::{Backend, Digest32};
use crate::hd::HdPath;
use crate::policy::HdRules;
use crate::policy::bitcoin::{MAX_MONEY, TxFacts};
use crate::secret::WalletSecret;

/// How a key of the root is spent or paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Script {
    /// Native SegWit v0, BIP-84.
    P2wpkh,
    /// SegWit v0 nested in P2SH, BIP-49.
    P2shP2wpkh,
    /// Taproot key path with the BIP-86 tweak.
    P2tr,
}

/// A claim that an input or output belongs to the root.
#[derive(Debug, Clone)]
struct Claim {
    index: usize,
    path: HdPath,
    /// The key the PSBT names: compressed, or x-only for Taproot.
    named: Vec<u8>,
}

/// A PSBT read against one root, before its keys are derived.
#[derive(Debug)]
pub(crate) struct Reading {
    psbt: Psbt,
    inputs: Vec<Claim>,
    change: Vec<Claim>,
}

/// The PSBT's origins that name `fingerprint`: (key bytes, path), BIP-32 ones first.
fn origins(
    fingerprint: Fingerprint,
    bip32: &std::collections::BTreeMap<secp256k1::PublicKey, (Fingerprint, DerivationPath)>,
    taproot: &std::collections::BTreeMap<
        XOnlyPublicKey,
        (Vec<bitcoin::TapLeafHash>, (Fingerprint, DerivationPath)),
    >,
) -> Result<Vec<(Vec<u8>, HdPath)>, Error> {
    let path = |p: &DerivationPath| {
        let indices: Vec<u32> = p.into_iter().map(|&c| u32::from(c)).collect();
        HdPath::from_indices(&indices)
    };
    let mut found = Vec::new();
    for (key, (fp, p)) in bip32 {
        if *fp == fingerprint {
            found.push((key.serialize().to_vec(), path(p)?));
        }
    }
    for (key, (leaves, (fp, p))) in taproot {
        // Key-path origins only: a script-path key is not spent by this signer.
        if *fp == fingerprint && leaves.is_empty() {
            found.push((key.serialize().to_vec(), path(p)?));
        }
    }
    Ok(found)
}

impl Reading {
    /// Finds the root's inputs and change claims. Inputs are claimed by exactly one origin
    /// naming the root; change claims whose path is outside `rules` are not change.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an input naming two keys of the root, or a path deeper
    /// than 255; [`Error::Refused`] when no input is the root's.
    pub(crate) fn new(psbt: Psbt, fingerprint: [u8; 4], rules: &HdRules) -> Result<Self, Error> {
        let fingerprint = Fingerprint::from(fingerprint);
        let mut inputs = Vec::new();
        for (index, input) in psbt.inputs.iter().enumerate() {
            let mut found = origins(fingerprint, &input.bip32_derivation, &input.tap_key_origins)?;
            match found.len() {
                0 => {}
                1 => {
                    let (named, path) = found.remove(0);
                    inputs.push(Claim { index, path, named });
                }
                _ => {
                    return Err(Error::InvalidArgument(
                        "a PSBT input names two keys of this root",
                    ));
                }
            }
        }
        if inputs.is_empty() {
            return Err(Error::Refused("no input of the PSBT is this root's"));
        }
        let mut change = Vec::new();
        for (index, output) in psbt.outputs.iter().enumerate() {
            let found = origins(
                fingerprint,
                &output.bip32_derivation,
                &output.tap_key_origins,
            )?;
            if let [(named, path)] = found.as_slice()
                && rules.allows(path)
            {
                change.push(Claim {
                    index,
                    path: path.clone(),
                    named: named.clone(),
                });
            }
        }
        Ok(Self {
            psbt,
            inputs,
            change,
        })
    }

    /// The paths the vault must derive: the inputs', then the change claims'.
    pub(crate) fn paths(&self) -> Vec<HdPath> {
        self.inputs
            .iter()
            .chain(&self.change)
            .map(|claim| claim.path.clone())
            .collect()
    }

    /// Checks the claims against the derived `keys` (in [`Reading::paths`] order) and computes
    /// what the transaction does. Returns the facts and each signed input's script kind.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an input whose named key or script is not its path's key's,
    /// outputs worth more than the inputs, or an amount above 21 million bitcoin.
    pub(crate) fn facts<B: Backend>(
        &self,
        keys: &[Arc<B::Key>],
    ) -> Result<(TxFacts<'_>, Vec<Script>), Error> {
        let secp = Secp256k1::verification_only();
        let public = |key: &B::Key| {
            CompressedPublicKey::from_slice(&B::public_key_compressed(key))
                .map_err(|_| Error::Internal)
        };
        let (input_keys, change_keys) = keys.split_at(self.inputs.len());
        let mut kinds = Vec::with_capacity(self.inputs.len());
        for (claim, key) in self.inputs.iter().zip(input_keys) {
            let key = public(key)?;
            let input = &self.psbt.inputs[claim.index];
            let spent = &input
                .witness_utxo
                .as_ref()
                .ok_or(Error::Internal)?
                .script_pubkey;
            let kind = script_of(
                &secp,
                &key,
                &claim.named,
                spent,
                input.redeem_script.as_ref(),
            )
            .ok_or(Error::InvalidArgument(
                "a PSBT input's key or script is not the key at its path",
            ))?;
            if kind == Script::P2tr && input.tap_merkle_root.is_some() {
                return Err(Error::InvalidArgument(
                    "a Taproot input of this root has a script tree",
                ));
            }
            kinds.push(kind);
        }
        let mut is_change = vec![false; self.psbt.outputs.len()];
        for (claim, key) in self.change.iter().zip(change_keys) {
            let key = public(key)?;
            let output = &self.psbt.outputs[claim.index];
            let paid = &self.psbt.unsigned_tx.output[claim.index].script_pubkey;
            // A claim that does not hold is no change: the output is judged as a payment.
            is_change[claim.index] = script_of(
                &secp,
                &key,
                &claim.named,
                paid,
                output.redeem_script.as_ref(),
            )
            .is_some();
        }
        let inputs = sum(self
            .psbt
            .inputs
            .iter()
            .map(|i| i.witness_utxo.as_ref().map_or(0, |u| u.value.to_sat())))?;
        let tx = &self.psbt.unsigned_tx;
        let outputs = sum(tx.output.iter().map(|o| o.value.to_sat()))?;
        let fee = inputs.checked_sub(outputs).ok_or(Error::InvalidArgument(
            "PSBT outputs are worth more than its inputs",
        ))?;
        let payments = tx
            .output
            .iter()
            .zip(&is_change)
            .filter(|(_, change)| !**change)
            .map(|(output, _)| (output.script_pubkey.as_bytes(), output.value.to_sat()))
            .collect();
        Ok((
            TxFacts {
                payments,
                fee,
                vsize: vsize_floor(tx, &kinds),
            },
            kinds,
        ))
    }

    /// Signs every claimed input with its key (in [`Reading::paths`] order), as `kinds` says
    /// ([`Reading::facts`]), and returns the PSBT with the signatures added and the indices
    /// signed. Each signature is verified before it is kept.
    ///
    /// # Errors
    /// [`Error::Internal`] if a sighash cannot be computed or a signature does not verify.
    pub(crate) fn sign<B: Backend>(
        mut self,
        keys: &[Arc<B::Key>],
        kinds: &[Script],
    ) -> Result<(Psbt, Vec<u32>), Error> {
        let secp = Secp256k1::new();
        let prevouts: Vec<TxOut> = self
            .psbt
            .inputs
            .iter()
            .map(|i| i.witness_utxo.clone().ok_or(Error::Internal))
            .collect::<Result<_, _>>()?;
        let mut cache = SighashCache::new(&self.psbt.unsigned_tx);
        let mut signatures = Vec::with_capacity(self.inputs.len());
        for ((claim, key), kind) in self.inputs.iter().zip(keys).zip(kinds) {
            let utxo = &prevouts[claim.index];
            let signature = match kind {
                Script::P2wpkh | Script::P2shP2wpkh => {
                    let program = match kind {
                        Script::P2wpkh => utxo.script_pubkey.clone(),
                        _ => self.psbt.inputs[claim.index]
                            .redeem_script
                            .clone()
                            .ok_or(Error::Internal)?,
                    };
                    let sighash = cache
                        .p2wpkh_signature_hash(
                            claim.index,
                            &program,
                            utxo.value,
                            EcdsaSighashType::All,
                        )
                        .map_err(|_| Error::Internal)?;
                    Signed::Ecdsa(sign_ecdsa::<B>(key, sighash.to_byte_array())?)
                }
                Script::P2tr => {
                    let sighash = cache
                        .taproot_key_spend_signature_hash(
                            claim.index,
                            &Prevouts::All(&prevouts),
                            TapSighashType::Default,
                        )
                        .map_err(|_| Error::Internal)?;
                    let mut aux = [0u8; 32];
                    getrandom::fill(&mut aux)?;
                    let signature =
                        sign_taproot::<B>(&secp, key, sighash.to_byte_array(), None, &aux)?;
                    Signed::Schnorr(signature)
                }
            };
            signatures.push((claim.index, signature));
        }
        let mut signed = Vec::with_capacity(signatures.len());
        for (index, signature) in signatures {
            let input = &mut self.psbt.inputs[index];
            match signature {
                Signed::Ecdsa((public, signature)) => {
                    input.partial_sigs.insert(
                        bitcoin::PublicKey::new(public),
                        bitcoin::ecdsa::Signature {
                            signature,
                            sighash_type: EcdsaSighashType::All,
                        },
                    );
                }
                Signed::Schnorr(signature) => {
                    input.tap_key_sig = Some(bitcoin::taproot::Signature {
                        signature,
                        sighash_type: TapSighashType::Default,
                    });
                }
            }
            signed.push(u32::try_from(index).map_err(|_| Error::Internal)?);
        }
        Ok((self.psbt, signed))
    }
}

enum Signed {
    Ecdsa((secp256k1::PublicKey, secp256k1::ecdsa::Signature)),
    Schnorr(secp256k1::schnorr::Signature),
}

/// ECDSA over a BIP-143 sighash with the backend, verified.
fn sign_ecdsa<B: Backend>(
    key: &B::Key,
    sighash: [u8; 32],
) -> Result<(secp256k1::PublicKey, secp256k1::ecdsa::Signature), Error> {
    let digest = Digest32(sighash);
    let signature = B::sign_ecdsa(key, &digest);
    let public = B::public_key(key);
    if !B::verify_ecdsa_vartime(&public, &digest, &signature.rs) {
        return Err(Error::Internal);
    }
    Ok((
        secp256k1::PublicKey::from_slice(&public.compressed()).map_err(|_| Error::Internal)?,
        secp256k1::ecdsa::Signature::from_compact(&signature.rs).map_err(|_| Error::Internal)?,
    ))
}

/// BIP-340 over a BIP-341 sighash with the key tweaked by `merkle_root` (`None`, as BIP-86
/// says, for a key with no script tree): the tweak by rust-bitcoin's libsecp256k1, the
/// signature by the backend with `aux` as its auxiliary randomness, verified against the
/// output key.
fn sign_taproot<B: Backend>(
    secp: &Secp256k1<secp256k1::All>,
    key: &B::Key,
    sighash: [u8; 32],
    merkle_root: Option<bitcoin::TapNodeHash>,
    aux: &[u8; 32],
) -> Result<secp256k1::schnorr::Signature, Error> {
    let secret = B::secret(key);
    let mut pair =
        Keypair::from_seckey_slice(secp, secret.expose_secret()).map_err(|_| Error::Internal)?;
    drop(secret);
    let mut tweaked = pair.tap_tweak(secp, merkle_root).to_keypair();
    pair.non_secure_erase();
    let output_key = tweaked.x_only_public_key().0.serialize();
    let tweaked_secret = WalletSecret::from_bytes(&Zeroizing::new(tweaked.secret_bytes()));
    tweaked.non_secure_erase();
    let tweaked_key = B::load(&tweaked_secret)?;
    drop(tweaked_secret);
    let signature = B::sign_schnorr(&tweaked_key, &sighash, aux)?;
    if !B::verify_schnorr_vartime(&output_key, &sighash, &signature) {
        return Err(Error::Internal);
    }
    secp256k1::schnorr::Signature::from_slice(&signature).map_err(|_| Error::Internal)
}

/// The sum of `amounts`, refused above 21 million bitcoin.
fn sum(mut amounts: impl Iterator<Item = u64>) -> Result<u64, Error> {
    amounts
        .try_fold(0u64, |total, amount| {
            total.checked_add(amount).filter(|t| *t <= MAX_MONEY)
        })
        .ok_or(Error::InvalidArgument(
            "PSBT amounts above 21 million bitcoin",
        ))
}

/// Which of this root's scripts `script` is for `key`, if the PSBT names `key` itself (`named`:
/// compressed for v0, x-only for Taproot).
fn script_of(
    secp: &Secp256k1<secp256k1::VerifyOnly>,
    key: &CompressedPublicKey,
    named: &[u8],
    script: &ScriptBuf,
    redeem: Option<&ScriptBuf>,
) -> Option<Script> {
    let p2wpkh = ScriptBuf::new_p2wpkh(&key.wpubkey_hash());
    let xonly = XOnlyPublicKey::from(key.0);
    if named == key.to_bytes().as_slice() {
        if *script == p2wpkh && redeem.is_none() {
            return Some(Script::P2wpkh);
        }
        if redeem == Some(&p2wpkh) && *script == p2wpkh.to_p2sh() {
            return Some(Script::P2shP2wpkh);
        }
    }
    if named == xonly.serialize().as_slice() && *script == ScriptBuf::new_p2tr(secp, xonly, None) {
        return Some(Script::P2tr);
    }
    None
}

/// The smallest weight the signed transaction can have, in virtual bytes (rounded up): the
/// unsigned transaction, the SegWit marker and flag, and this root's witnesses at their
/// smallest likely size (a 71-byte DER signature with its sighash byte; 64-byte Schnorr with
/// SIGHASH_DEFAULT); other parties' inputs count without witness, so the fee rate is never
/// underestimated.
fn vsize_floor(tx: &bitcoin::Transaction, kinds: &[Script]) -> u64 {
    const P2WPKH_WITNESS: u64 = 1 + (1 + 71) + (1 + 33);
    const P2SH_SCRIPT_SIG: u64 = 4 * 23;
    const P2TR_WITNESS: u64 = 1 + 1 + 64;
    let base = tx.weight().to_wu() + 2;
    let witnesses: u64 = kinds
        .iter()
        .map(|kind| match kind {
            Script::P2wpkh => P2WPKH_WITNESS,
            Script::P2shP2wpkh => P2WPKH_WITNESS + P2SH_SCRIPT_SIG,
            Script::P2tr => P2TR_WITNESS,
        })
        .sum();
    (base + witnesses).div_ceil(4)
}

#[cfg(test)]
mod tests;
