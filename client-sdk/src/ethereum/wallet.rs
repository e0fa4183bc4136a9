//! A signer key as an alloy wallet: `Signer` and `TxSigner`, so that
//! `ProviderBuilder::new().wallet(EthereumWallet::from(signer))` sends transactions the enclave
//! read, judged and signed. Messages and dynamic typed data
//! ([`Signer::sign_dynamic_typed_data`]) go to the enclave as what they are. [`Signer::sign_hash`]
//! is a blind signature, and so is alloy's default [`Signer::sign_typed_data`] for a compiled
//! `SolStruct` (it hashes client-side; the trait gives no way to serialise the struct): keys whose
//! policy has Ethereum rules refuse both unless the policy allows blind signing.

use alloy_consensus::SignableTransaction;
use alloy_dyn_abi::TypedData;
use alloy_network::TxSigner;
use alloy_primitives::{Address, B256, ChainId, Signature};
use alloy_signer::Signer;

use crate::{Client, Error};

/// A signer key bound to its attested address.
#[derive(Clone, Debug)]
pub struct EthereumSigner {
    client: Client,
    key_id: String,
    address: Address,
    chain_id: Option<ChainId>,
}

impl EthereumSigner {
    /// The key `key_id`, through `client`; its address comes from the key's verified statement.
    ///
    /// # Errors
    /// Service or verification errors fetching the key.
    pub async fn new(client: Client, key_id: &str) -> Result<Self, Error> {
        let info = client.public_key(key_id).await?;
        let address = info
            .ethereum_address
            .parse()
            .map_err(|_| Error::Verification("malformed Ethereum address"))?;
        Ok(Self {
            client,
            key_id: key_id.to_owned(),
            address,
            chain_id: None,
        })
    }

    /// The key's id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

fn alloy_error(error: Error) -> alloy_signer::Error {
    alloy_signer::Error::other(error)
}

#[async_trait::async_trait]
impl Signer for EthereumSigner {
    /// Blind: the enclave signs a digest it cannot read. Keys with Ethereum rules refuse it
    /// unless their policy allows blind signing.
    async fn sign_hash(&self, hash: &B256) -> alloy_signer::Result<Signature> {
        let signature = self
            .client
            .sign_digest(&self.key_id, hash.0)
            .await
            .map_err(alloy_error)?;
        Ok(Signature::from_bytes_and_parity(
            &signature.to_bytes65()[..64],
            signature.v == 1,
        ))
    }

    async fn sign_message(&self, message: &[u8]) -> alloy_signer::Result<Signature> {
        let signature = self
            .client
            .sign_personal_message(&self.key_id, message)
            .await
            .map_err(alloy_error)?;
        Ok(signature.to_alloy())
    }

    async fn sign_dynamic_typed_data(
        &self,
        payload: &TypedData,
    ) -> alloy_signer::Result<Signature> {
        let json = serde_json::to_string(payload).map_err(alloy_signer::Error::other)?;
        let signature = self
            .client
            .sign_typed_data(&self.key_id, &json)
            .await
            .map_err(alloy_error)?;
        Ok(signature.to_alloy())
    }

    fn address(&self) -> Address {
        self.address
    }

    fn chain_id(&self) -> Option<ChainId> {
        self.chain_id
    }

    fn set_chain_id(&mut self, chain_id: Option<ChainId>) {
        self.chain_id = chain_id;
    }
}

#[async_trait::async_trait]
impl TxSigner<Signature> for EthereumSigner {
    fn address(&self) -> Address {
        self.address
    }

    async fn sign_transaction(
        &self,
        tx: &mut dyn SignableTransaction<Signature>,
    ) -> alloy_signer::Result<Signature> {
        if let Some(chain_id) = self.chain_id
            && !tx.set_chain_id_checked(chain_id)
        {
            return Err(alloy_signer::Error::TransactionChainIdMismatch {
                signer: chain_id,
                tx: tx.chain_id().unwrap_or_default(),
            });
        }
        let mut unsigned = Vec::new();
        tx.encode_for_signing(&mut unsigned);
        let signed = self
            .client
            .sign_transaction(&self.key_id, &unsigned)
            .await
            .map_err(alloy_error)?;
        Ok(signed.signature.to_alloy())
    }
}
