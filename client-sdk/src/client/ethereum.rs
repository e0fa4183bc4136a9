//! Ethereum signing: transactions, `personal_sign` messages and EIP-712 typed data, each read
//! and judged by the enclave, each answer verified here against a digest computed here.

use signer_proto::pb;
use signer_proto::pb::sign_ethereum_body::Payload;

use super::Client;
use super::call::Fresh;
use crate::Error;
use crate::ethereum::{self, EthereumSignature, SignedTransaction};

impl Client {
    async fn sign_ethereum(
        &self,
        key_id: &str,
        path: &[u32],
        payload: Payload,
    ) -> Result<pb::SignEthereumResponse, Error> {
        let (reply, _) = self
            .call(
                Fresh::EveryAttempt,
                || {
                    self.envelope(pb::request_body::Operation::SignEthereum(
                        pb::SignEthereumBody {
                            key_id: key_id.to_owned(),
                            payload: Some(payload.clone()),
                            path: path.to_vec(),
                        },
                    ))
                },
                |mut c, r| async move { c.sign_ethereum(r).await },
            )
            .await?;
        Ok(reply)
    }

    /// Signs an unsigned transaction given in its signing encoding (legacy with EIP-155's chain
    /// id, or EIP-2930, EIP-1559 or EIP-7702 typed), and returns it signed and encoded for
    /// `eth_sendRawTransaction`, verified.
    ///
    /// # Errors
    /// Service errors (`PERMISSION_DENIED` naming the rule a policy refused);
    /// [`Error::Verification`] if the answer does not verify.
    pub async fn sign_transaction(
        &self,
        key_id: &str,
        unsigned: &[u8],
    ) -> Result<SignedTransaction, Error> {
        self.sign_transaction_at(key_id, &[], unsigned).await
    }

    /// [`Client::sign_transaction`] with the key at `path` under an HD root (the root's
    /// Ethereum rules apply, and its daily totals count every key under it).
    ///
    /// # Errors
    /// As [`Client::sign_transaction`].
    pub async fn sign_transaction_at(
        &self,
        key_id: &str,
        path: &[u32],
        unsigned: &[u8],
    ) -> Result<SignedTransaction, Error> {
        let key = self.verified_key_at(key_id, path).await?;
        let reply = self
            .sign_ethereum(key_id, path, Payload::Transaction(unsigned.to_vec()))
            .await?;
        ethereum::verify_transaction(&key, unsigned, &reply)
    }

    /// Signs an EIP-191 `personal_sign` message, verified.
    ///
    /// # Errors
    /// As [`Client::sign_transaction`].
    pub async fn sign_personal_message(
        &self,
        key_id: &str,
        message: &[u8],
    ) -> Result<EthereumSignature, Error> {
        let key = self.verified_key(key_id).await?;
        let digest = ethereum::personal_message_digest(message);
        let reply = self
            .sign_ethereum(key_id, &[], Payload::PersonalMessage(message.to_vec()))
            .await?;
        ethereum::verify_signature(&key, &digest, &reply)
    }

    /// Signs EIP-712 typed data given as the standard JSON (`types`, `primaryType`, `domain`,
    /// `message`), verified against the hash computed here.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for typed data that does not hash; otherwise as
    /// [`Client::sign_transaction`].
    pub async fn sign_typed_data(
        &self,
        key_id: &str,
        json: &str,
    ) -> Result<EthereumSignature, Error> {
        let digest = ethereum::typed_data_digest(json)?;
        let key = self.verified_key(key_id).await?;
        let reply = self
            .sign_ethereum(key_id, &[], Payload::TypedData(json.to_owned()))
            .await?;
        ethereum::verify_signature(&key, &digest, &reply)
    }
}
