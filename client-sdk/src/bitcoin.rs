//! Bitcoin PSBTs: what the SDK checks of a signed PSBT before handing it back. The answer is
//! the PSBT the caller sent with only the signatures copied in that verify here — each against
//! a sighash computed here (BIP-143, BIP-341 key path) and the key the caller's PSBT names for
//! that input (the Taproot output key of its `witness_utxo`) — so a relay can neither forge a
//! signature nor slip anything else into the result.

use bitcoin::hashes::Hash as _;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{Message, Secp256k1, XOnlyPublicKey};
use bitcoin::sighash::{EcdsaSighashType, Prevouts, SighashCache, TapSighashType};
use bitcoin::{PublicKey, TxOut};

use crate::Error;

/// A PSBT with the enclave's verified signatures added.
#[derive(Clone, Debug)]
pub struct SignedPsbt {
    /// The PSBT as sent, with the verified signatures.
    pub psbt: Psbt,
    /// The inputs signed, ascending.
    pub signed_inputs: Vec<u32>,
}

/// Copies into `sent` the signatures of `returned` for `signed_inputs`, each verified.
///
/// # Errors
/// [`Error::Verification`] for a returned PSBT of another transaction, a missing or extra
/// signature, or one that does not verify.
pub(crate) fn accept(
    mut sent: Psbt,
    returned: &Psbt,
    signed_inputs: Vec<u32>,
) -> Result<SignedPsbt, Error> {
    let bad = Error::Verification;
    if returned.unsigned_tx != sent.unsigned_tx || returned.inputs.len() != sent.inputs.len() {
        return Err(bad("the signed PSBT is of another transaction"));
    }
    if signed_inputs.is_empty() || !signed_inputs.windows(2).all(|w| w[0] < w[1]) {
        return Err(bad("signed inputs are not distinct and ascending"));
    }
    let prevouts: Vec<TxOut> = sent
        .inputs
        .iter()
        .map(|input| input.witness_utxo.clone())
        .collect::<Option<_>>()
        .ok_or(Error::InvalidArgument(
            "every PSBT input needs its witness_utxo",
        ))?;
    let secp = Secp256k1::verification_only();
    let mut cache = SighashCache::new(&sent.unsigned_tx);
    let mut additions = Vec::with_capacity(signed_inputs.len());
    for &index in &signed_inputs {
        let i = usize::try_from(index).map_err(|_| bad("signed input out of range"))?;
        let (mine, theirs) = (
            sent.inputs.get(i).ok_or(bad("signed input out of range"))?,
            &returned.inputs[i],
        );
        let utxo = &prevouts[i];
        if let Some(signature) = theirs.tap_key_sig.filter(|_| mine.tap_key_sig.is_none()) {
            let output_key = utxo
                .script_pubkey
                .as_bytes()
                .get(2..)
                .filter(|_| utxo.script_pubkey.is_p2tr())
                .and_then(|key| XOnlyPublicKey::from_slice(key).ok())
                .ok_or(bad("Taproot signature on an input that is not P2TR"))?;
            let sighash = cache
                .taproot_key_spend_signature_hash(
                    i,
                    &Prevouts::All(&prevouts),
                    signature.sighash_type,
                )
                .map_err(|_| bad("Taproot sighash"))?;
            if signature.sighash_type != TapSighashType::Default
                || secp
                    .verify_schnorr(
                        &signature.signature,
                        &Message::from_digest(sighash.to_byte_array()),
                        &output_key,
                    )
                    .is_err()
            {
                return Err(bad("a Taproot signature does not verify"));
            }
            additions.push((i, Addition::Taproot(signature)));
            continue;
        }
        let new: Vec<_> = theirs
            .partial_sigs
            .iter()
            .filter(|(key, _)| !mine.partial_sigs.contains_key(key))
            .collect();
        let [(key, signature)] = new.as_slice() else {
            return Err(bad("a signed input carries no new signature, or several"));
        };
        if !mine.bip32_derivation.contains_key(&key.inner) || !key.compressed {
            return Err(bad("a signature by a key the PSBT does not name"));
        }
        let program = if utxo.script_pubkey.is_p2sh() {
            mine.redeem_script
                .clone()
                .ok_or(bad("P2SH input without its redeem script"))?
        } else {
            utxo.script_pubkey.clone()
        };
        let sighash = cache
            .p2wpkh_signature_hash(i, &program, utxo.value, EcdsaSighashType::All)
            .map_err(|_| bad("signature on an input that is not P2WPKH"))?;
        if signature.sighash_type != EcdsaSighashType::All
            || secp
                .verify_ecdsa(
                    &Message::from_digest(sighash.to_byte_array()),
                    &signature.signature,
                    &key.inner,
                )
                .is_err()
        {
            return Err(bad("an ECDSA signature does not verify"));
        }
        additions.push((i, Addition::Ecdsa(**key, **signature)));
    }
    for (i, addition) in additions {
        match addition {
            Addition::Taproot(signature) => sent.inputs[i].tap_key_sig = Some(signature),
            Addition::Ecdsa(key, signature) => {
                sent.inputs[i].partial_sigs.insert(key, signature);
            }
        }
    }
    Ok(SignedPsbt {
        psbt: sent,
        signed_inputs,
    })
}

enum Addition {
    Taproot(bitcoin::taproot::Signature),
    Ecdsa(PublicKey, bitcoin::ecdsa::Signature),
}
