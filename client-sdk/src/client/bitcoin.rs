//! Bitcoin signing: a PSBT read, judged and signed by the enclave under an HD root's Bitcoin
//! rules, and the answer verified here (see [`crate::bitcoin`]).

use bitcoin::psbt::Psbt;
use signer_proto::pb;

use super::Client;
use super::call::Fresh;
use crate::Error;
use crate::bitcoin::{SignedPsbt, accept};

impl Client {
    /// Signs the inputs of `psbt` that belong to the HD root `key_id` (named by its fingerprint
    /// in their `bip32_derivation` or key-path `tap_key_origins`): P2WPKH and P2SH-P2WPKH with
    /// SIGHASH_ALL, BIP-86 Taproot key path with SIGHASH_DEFAULT. Every input needs its
    /// `witness_utxo`. Returns `psbt` with the signatures added, each verified here; finalise
    /// and broadcast it as usual.
    ///
    /// # Errors
    /// Service errors (`PERMISSION_DENIED` naming the Bitcoin rule a transaction breaks,
    /// `INVALID_ARGUMENT` for a PSBT the enclave will not read); [`Error::Verification`] if the
    /// answer does not verify.
    pub async fn sign_psbt(&self, key_id: &str, psbt: &Psbt) -> Result<SignedPsbt, Error> {
        if psbt.inputs.iter().any(|input| input.witness_utxo.is_none()) {
            return Err(Error::InvalidArgument(
                "every PSBT input needs its witness_utxo",
            ));
        }
        let bytes = psbt.serialize();
        if bytes.len() > signer_proto::MAX_BODY_BYTES {
            return Err(Error::InvalidArgument(
                "PSBT larger than a request body may be (64 KiB)",
            ));
        }
        let (reply, _) = self
            .call(
                Fresh::EveryAttempt,
                || {
                    self.envelope(pb::request_body::Operation::SignPsbt(pb::SignPsbtBody {
                        key_id: key_id.to_owned(),
                        psbt: bytes.clone(),
                    }))
                },
                |mut c, r| async move { c.sign_psbt(r).await },
            )
            .await?;
        if reply.key_id != key_id {
            return Err(Error::Verification("reply is for another key"));
        }
        let returned = Psbt::deserialize(&reply.psbt)
            .map_err(|_| Error::Verification("the signed PSBT does not decode"))?;
        accept(psbt.clone(), &returned, reply.signed_inputs)
    }
}
