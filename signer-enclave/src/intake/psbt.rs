//! `SignPsbtBody`: the PSBT decoded by rust-bitcoin (BIP-174 version 0; duplicate keys and
//! malformed maps are its errors), bounded in inputs and outputs, with nothing after it, and
//! with the UTXO data every fee and amount rule depends on: each input's `witness_utxo`, and a
//! `non_witness_utxo`, where given, that agrees with it.

use bitcoin::Psbt;
use signer_proto::pb::request_body::Operation;

use super::stamped::WRONG_OPERATION;
use crate::Error;
use crate::ids::KeyId;

/// Most inputs one PSBT may have (a 64 KiB body holds about 450 P2WPKH inputs with their
/// UTXO and origin data; this bounds the sighash work of a body of minimal inputs).
pub(crate) const MAX_INPUTS: usize = 500;
/// Most outputs one PSBT may have.
pub(crate) const MAX_OUTPUTS: usize = 500;

/// A validated `SignPsbt` request.
#[derive(Debug)]
pub(crate) struct SignPsbtOp {
    /// The HD root.
    pub key_id: KeyId,
    /// The PSBT, every input with its `witness_utxo`.
    pub psbt: Psbt,
}

/// Validates a `SignPsbtBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub(crate) fn sign_psbt_op(operation: Operation) -> Result<SignPsbtOp, Error> {
    let Operation::SignPsbt(body) = operation else {
        return Err(WRONG_OPERATION);
    };
    let key_id = KeyId::parse(&body.key_id)?;
    Ok(SignPsbtOp {
        key_id,
        psbt: decode(&body.psbt)?,
    })
}

/// Decodes and checks a PSBT.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub(crate) fn decode(bytes: &[u8]) -> Result<Psbt, Error> {
    let mut rest = bytes;
    let psbt = Psbt::deserialize_from_reader(&mut rest).map_err(|error| {
        tracing::debug!(%error, "PSBT does not decode");
        Error::InvalidArgument("malformed PSBT")
    })?;
    if !rest.is_empty() {
        return Err(Error::InvalidArgument("bytes after the PSBT"));
    }
    let tx = &psbt.unsigned_tx;
    if tx.input.len() > MAX_INPUTS || tx.output.len() > MAX_OUTPUTS {
        return Err(Error::InvalidArgument(
            "PSBT has over 500 inputs or outputs",
        ));
    }
    if tx.input.is_empty() || tx.output.is_empty() {
        return Err(Error::InvalidArgument("PSBT has no inputs or no outputs"));
    }
    for (input, txin) in psbt.inputs.iter().zip(&tx.input) {
        let utxo = input
            .witness_utxo
            .as_ref()
            .ok_or(Error::InvalidArgument("PSBT input without witness_utxo"))?;
        // Where the full previous transaction is given, it must be the one spent and agree.
        if let Some(previous) = &input.non_witness_utxo {
            let index = usize::try_from(txin.previous_output.vout).unwrap_or(usize::MAX);
            if previous.compute_txid() != txin.previous_output.txid
                || previous.output.get(index) != Some(utxo)
            {
                return Err(Error::InvalidArgument(
                    "PSBT input's non_witness_utxo disagrees with its witness_utxo",
                ));
            }
        }
    }
    Ok(psbt)
}
