//! Bitcoin Core's interpreter (libbitcoinconsensus) over a finalised PSBT: every input checked.

use bitcoin::Transaction;
use bitcoin::TxOut;
use bitcoin::psbt::Psbt;

/// Extracts the transaction and has libbitcoinconsensus verify every input (with Taproot's
/// rules, which need every spent output).
pub(super) fn verify_with_core(psbt: &Psbt) -> Transaction {
    let prevouts: Vec<TxOut> = psbt
        .inputs
        .iter()
        .map(|input| input.witness_utxo.clone().unwrap())
        .collect();
    let tx = psbt.clone().extract_tx_unchecked_fee_rate();
    let bytes = bitcoin::consensus::serialize(&tx);
    let utxos: Vec<bitcoinconsensus::Utxo> = prevouts
        .iter()
        .map(|out| bitcoinconsensus::Utxo {
            script_pubkey: out.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: u32::try_from(out.script_pubkey.len()).unwrap(),
            value: i64::try_from(out.value.to_sat()).unwrap(),
        })
        .collect();
    for (index, out) in prevouts.iter().enumerate() {
        bitcoinconsensus::verify(
            out.script_pubkey.as_bytes(),
            out.value.to_sat(),
            &bytes,
            Some(&utxos),
            index,
        )
        .unwrap_or_else(|e| panic!("input {index} does not verify: {e:?}"));
    }
    tx
}
