//! Ethereum answers, verified: every signature must recover to the key's attested address over a
//! digest this SDK computed itself, and a signed transaction must decode to exactly the
//! transaction that was asked for, carrying that signature and hash. With the `alloy` feature,
//! `EthereumSigner` makes a signer key an alloy `Signer` and `TxSigner`.

use alloy_consensus::TxEnvelope;
use alloy_consensus::transaction::SignableTransaction as _;
use alloy_eips::eip2718::Decodable2718 as _;
use alloy_primitives::keccak256;
use signer_proto::pb;

use crate::Error;
use crate::verify::{KeyInfo, check_ecdsa};

#[cfg(feature = "alloy")]
mod wallet;
#[cfg(feature = "alloy")]
pub use wallet::EthereumSigner;

/// A verified Ethereum signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EthereumSignature {
    /// r ‖ s ‖ v with v = 27 + y-parity (the `personal_sign` / EIP-712 convention), hex.
    #[serde(serialize_with = "as_hex")]
    pub signature: [u8; 65],
    /// The y-parity (recovery id) of the signature.
    pub y_parity: bool,
    /// The digest signed: the transaction's signing hash, EIP-191's or EIP-712's hash, hex.
    #[serde(serialize_with = "as_hex")]
    pub digest: [u8; 32],
}

impl EthereumSignature {
    /// The signature as alloy's type.
    pub fn to_alloy(&self) -> alloy_primitives::Signature {
        alloy_primitives::Signature::from_bytes_and_parity(&self.signature[..64], self.y_parity)
    }
}

/// A verified signed transaction, ready to broadcast.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SignedTransaction {
    /// The signature over the transaction's signing hash.
    pub signature: EthereumSignature,
    /// The EIP-2718 encoding (`eth_sendRawTransaction`'s argument), hex.
    #[serde(serialize_with = "as_hex")]
    pub encoded: Vec<u8>,
    /// Its transaction hash, hex.
    #[serde(serialize_with = "as_hex")]
    pub hash: [u8; 32],
}

fn as_hex<S: serde::Serializer, T: AsRef<[u8]>>(
    bytes: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("0x{}", hex::encode(bytes)))
}

/// EIP-191 (version `0x45`) hash of a `personal_sign` message.
pub fn personal_message_digest(message: &[u8]) -> [u8; 32] {
    alloy_primitives::eip191_hash_message(message).0
}

/// EIP-712 signing hash of typed data in the standard JSON form.
///
/// # Errors
/// [`Error::InvalidArgument`] if it does not parse or does not match its types.
pub fn typed_data_digest(json: &str) -> Result<[u8; 32], Error> {
    let typed: alloy_dyn_abi::TypedData = serde_json::from_str(json)
        .map_err(|_| Error::InvalidArgument("malformed EIP-712 typed data"))?;
    let digest = typed
        .eip712_signing_hash()
        .map_err(|_| Error::InvalidArgument("EIP-712 typed data does not match its types"))?;
    Ok(digest.0)
}

/// Verifies a signature reply over `digest` (computed by the caller, never taken from the
/// reply): the key, the digest, the 65-byte form and recovery to the key.
///
/// # Errors
/// [`Error::Verification`] on any mismatch.
pub fn verify_signature(
    key: &KeyInfo,
    digest: &[u8; 32],
    reply: &pb::SignEthereumResponse,
) -> Result<EthereumSignature, Error> {
    let bad = Error::Verification;
    if reply.key_id != key.key_id {
        return Err(bad("reply is for another key"));
    }
    if reply.digest != digest {
        return Err(bad("reply signs another digest"));
    }
    let signature: [u8; 65] = reply
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| bad("Ethereum signature length"))?;
    let y_parity = match reply.y_parity {
        0 => false,
        1 => true,
        _ => return Err(bad("y-parity out of range")),
    };
    if signature[64] != 27 + u8::from(y_parity) {
        return Err(bad("v disagrees with the y-parity"));
    }
    check_ecdsa(
        &key.public_key_compressed,
        digest,
        &signature[..64],
        u8::from(y_parity),
    )?;
    Ok(EthereumSignature {
        signature,
        y_parity,
        digest: *digest,
    })
}

/// Verifies a signed-transaction reply for the unsigned encoding `unsigned`: the signature
/// recovers to the key over Keccak-256 of `unsigned`, and the returned encoding decodes to the
/// same transaction with that signature and the returned hash.
///
/// # Errors
/// [`Error::Verification`] on any mismatch.
pub fn verify_transaction(
    key: &KeyInfo,
    unsigned: &[u8],
    reply: &pb::SignEthereumResponse,
) -> Result<SignedTransaction, Error> {
    let bad = Error::Verification;
    let digest = keccak256(unsigned).0;
    let signature = verify_signature(key, &digest, reply)?;
    let envelope = TxEnvelope::decode_2718_exact(reply.signed_transaction.as_slice())
        .map_err(|_| bad("signed transaction does not decode"))?;
    let mut inner = Vec::with_capacity(unsigned.len());
    let carried = match &envelope {
        TxEnvelope::Legacy(s) => {
            s.tx().encode_for_signing(&mut inner);
            s.signature()
        }
        TxEnvelope::Eip2930(s) => {
            s.tx().encode_for_signing(&mut inner);
            s.signature()
        }
        TxEnvelope::Eip1559(s) => {
            s.tx().encode_for_signing(&mut inner);
            s.signature()
        }
        TxEnvelope::Eip7702(s) => {
            s.tx().encode_for_signing(&mut inner);
            s.signature()
        }
        TxEnvelope::Eip4844(_) => return Err(bad("signed transaction is of another type")),
    };
    if inner != unsigned {
        return Err(bad("signed transaction is not the one asked for"));
    }
    if carried.as_bytes()[..64] != signature.signature[..64] || carried.v() != signature.y_parity {
        return Err(bad("signed transaction carries another signature"));
    }
    let hash = keccak256(&reply.signed_transaction).0;
    if reply.transaction_hash != hash || *envelope.tx_hash() != hash {
        return Err(bad("transaction hash disagrees"));
    }
    Ok(SignedTransaction {
        signature,
        encoded: reply.signed_transaction.clone(),
        hash,
    })
}

#[cfg(test)]
mod tests;
