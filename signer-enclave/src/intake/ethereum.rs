//! Ethereum payloads from a stamped `SignEthereumBody`: an unsigned transaction (legacy with
//! EIP-155, EIP-2930, EIP-1559, EIP-7702), an EIP-191 `personal_sign` message, or EIP-712 typed
//! data. Each is decoded with the alloy crates, refused unless it is the one canonical encoding
//! of what it says, and reduced to the digest the enclave signs plus the facts the key's
//! Ethereum rules judge ([`TxFacts`], [`DomainFacts`]).
//!
//! Limits: a transaction at most [`MAX_TRANSACTION`] bytes; a message at most [`MAX_MESSAGE`];
//! typed data at most [`MAX_TYPED_DATA`] bytes of JSON, [`MAX_JSON_DEPTH`] levels of nesting and
//! [`MAX_TYPES`] struct types. Recursive types are refused by alloy's resolver.

use alloy_consensus::transaction::SignableTransaction;
use alloy_consensus::{
    Transaction as _, TxEip1559, TxEip2930, TxEip7702, TxLegacy, TypedTransaction,
};
use alloy_dyn_abi::TypedData;
use alloy_primitives::{Address, B256, TxKind, U256};
use alloy_rlp::Decodable as _;
use alloy_sol_types::SolCall as _;
use signer_proto::pb;
use signer_proto::pb::request_body::Operation;
use signer_proto::pb::sign_ethereum_body::Payload;

use crate::Error;
use crate::backend::Digest32;
use crate::hd::HdPath;
use crate::ids::KeyId;

/// Largest unsigned transaction accepted, in bytes.
pub(crate) const MAX_TRANSACTION: usize = 32 * 1024;
/// Largest `personal_sign` message accepted, in bytes.
pub(crate) const MAX_MESSAGE: usize = 16 * 1024;
/// Largest typed-data JSON accepted, in bytes.
pub(crate) const MAX_TYPED_DATA: usize = 32 * 1024;
/// Deepest JSON nesting accepted in typed data.
pub(crate) const MAX_JSON_DEPTH: usize = 16;
/// Most struct types typed data may declare (`EIP712Domain` included).
pub(crate) const MAX_TYPES: usize = 64;

mod erc20 {
    alloy_sol_types::sol! {
        function transfer(address to, uint256 amount);
        function approve(address spender, uint256 amount);
        function transferFrom(address from, address to, uint256 amount);
    }
}

/// A validated `SignEthereumBody`.
#[derive(Debug)]
pub(crate) struct SignEthereumOp {
    /// The key to sign with.
    pub key_id: KeyId,
    /// For an HD root, the derived key's path (empty otherwise).
    pub path: HdPath,
    /// What to sign.
    pub payload: EthPayload,
}

/// A decoded payload and the digest to sign.
#[derive(Debug)]
pub(crate) enum EthPayload {
    /// An unsigned transaction.
    Transaction(Box<UnsignedTx>),
    /// An EIP-191 version 0x45 message, hashed.
    PersonalMessage(Digest32),
    /// EIP-712 typed data: its signing hash and domain.
    TypedData(Digest32, DomainFacts),
}

impl EthPayload {
    /// The 32-byte hash the enclave signs.
    pub(crate) fn digest(&self) -> Digest32 {
        match self {
            Self::Transaction(tx) => Digest32(tx.tx.signature_hash().0),
            Self::PersonalMessage(digest) | Self::TypedData(digest, _) => Digest32(digest.0),
        }
    }
}

/// An unsigned transaction, with what the rules judge.
#[derive(Debug)]
pub(crate) struct UnsignedTx {
    /// The transaction as alloy decoded it.
    pub tx: TypedTransaction,
    /// What it does.
    pub facts: TxFacts,
}

/// What a transaction does, as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxFacts {
    /// Its chain id (always present: legacy transactions must carry EIP-155's).
    pub chain_id: u64,
    /// Its destination; `None` creates a contract.
    pub to: Option<Address>,
    /// Wei it carries.
    pub value: U256,
    /// What its calldata asks.
    pub call: Call,
}

/// A transaction's calldata, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    /// No calldata: a plain transfer (or an empty contract creation).
    None,
    /// An ERC-20 `transfer` or `transferFrom` of `amount` to `recipient`.
    TokenTransfer {
        /// `transfer` or `transferFrom`.
        selector: [u8; 4],
        /// Where the tokens go.
        recipient: Address,
        /// Token units.
        amount: U256,
    },
    /// An ERC-20 `approve` of `amount` to `spender`.
    TokenApprove {
        /// `approve`'s.
        selector: [u8; 4],
        /// Who may spend.
        spender: Address,
        /// Allowance in token units.
        amount: U256,
    },
    /// Any other call, by selector (calldata shorter than four bytes has none).
    Other(Option<[u8; 4]>),
}

/// The fields of an EIP-712 domain that rules can name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DomainFacts {
    /// `name`.
    pub name: Option<String>,
    /// `chainId`, if it fits 64 bits (a larger one matches no rule that names a chain).
    pub chain_id: Option<U256>,
    /// `verifyingContract`.
    pub verifying_contract: Option<Address>,
}

/// Validates a `SignEthereumBody`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub(crate) fn sign_ethereum_op(operation: Operation) -> Result<SignEthereumOp, Error> {
    let Operation::SignEthereum(body) = operation else {
        return Err(Error::InvalidArgument("body is for another operation"));
    };
    let key_id = KeyId::parse(&body.key_id)?;
    let path = HdPath::from_indices(&body.path)?;
    let payload = match body.payload {
        Some(Payload::Transaction(bytes)) => {
            EthPayload::Transaction(Box::new(transaction(&bytes)?))
        }
        Some(Payload::PersonalMessage(message)) => {
            if message.len() > MAX_MESSAGE {
                return Err(Error::InvalidArgument(
                    "personal message longer than 16 KiB",
                ));
            }
            EthPayload::PersonalMessage(Digest32(alloy_primitives::eip191_hash_message(&message).0))
        }
        Some(Payload::TypedData(json)) => {
            let (digest, domain) = typed_data(&json)?;
            EthPayload::TypedData(digest, domain)
        }
        None => return Err(Error::InvalidArgument("sign_ethereum names no payload")),
    };
    Ok(SignEthereumOp {
        key_id,
        path,
        payload,
    })
}

/// Decodes an unsigned transaction in its signing encoding and reads what it does.
///
/// # Errors
/// [`Error::InvalidArgument`] for an oversized, truncated, trailing, non-canonical or
/// unsupported encoding, or a legacy transaction without EIP-155's chain id.
pub(crate) fn transaction(bytes: &[u8]) -> Result<UnsignedTx, Error> {
    const MALFORMED: Error = Error::InvalidArgument("malformed transaction encoding");
    if bytes.len() > MAX_TRANSACTION {
        return Err(Error::InvalidArgument("transaction longer than 32 KiB"));
    }
    let (&first, rest) = bytes.split_first().ok_or(MALFORMED)?;
    let mut buf = rest;
    let tx: TypedTransaction = match first {
        0xc0.. => {
            buf = bytes;
            TxLegacy::decode(&mut buf).map_err(|_| MALFORMED)?.into()
        }
        0x01 => TxEip2930::decode(&mut buf).map_err(|_| MALFORMED)?.into(),
        0x02 => TxEip1559::decode(&mut buf).map_err(|_| MALFORMED)?.into(),
        0x04 => TxEip7702::decode(&mut buf).map_err(|_| MALFORMED)?.into(),
        _ => {
            return Err(Error::InvalidArgument(
                "unsupported transaction type (legacy, 1, 2 or 4)",
            ));
        }
    };
    if !buf.is_empty() {
        return Err(Error::InvalidArgument("bytes after the transaction"));
    }
    let chain_id = tx.chain_id().ok_or(Error::InvalidArgument(
        "legacy transaction without EIP-155 chain id",
    ))?;
    // One encoding, one meaning: alloy's decoders accept some non-canonical forms (non-zero
    // EIP-155 placeholders, for one), so the bytes must be exactly what the decoded transaction
    // signs.
    let mut canonical = Vec::with_capacity(bytes.len());
    tx.encode_for_signing(&mut canonical);
    if canonical != bytes {
        return Err(Error::InvalidArgument(
            "transaction is not canonically encoded",
        ));
    }
    let to = match tx.kind() {
        TxKind::Create => None,
        TxKind::Call(to) => Some(to),
    };
    let facts = TxFacts {
        chain_id,
        to,
        value: tx.value(),
        call: call(tx.input()),
    };
    Ok(UnsignedTx { tx, facts })
}

/// Reads calldata: the three ERC-20 calls the rules understand when exactly and canonically
/// encoded, otherwise the selector.
fn call(input: &[u8]) -> Call {
    if input.is_empty() {
        return Call::None;
    }
    let exact = |encoded: Vec<u8>| encoded == input;
    if let Ok(c) = erc20::transferCall::abi_decode_validate(input)
        && exact(c.abi_encode())
    {
        return Call::TokenTransfer {
            selector: erc20::transferCall::SELECTOR,
            recipient: c.to,
            amount: c.amount,
        };
    }
    if let Ok(c) = erc20::transferFromCall::abi_decode_validate(input)
        && exact(c.abi_encode())
    {
        return Call::TokenTransfer {
            selector: erc20::transferFromCall::SELECTOR,
            recipient: c.to,
            amount: c.amount,
        };
    }
    if let Ok(c) = erc20::approveCall::abi_decode_validate(input)
        && exact(c.abi_encode())
    {
        return Call::TokenApprove {
            selector: erc20::approveCall::SELECTOR,
            spender: c.spender,
            amount: c.amount,
        };
    }
    Call::Other(input.get(..4).and_then(|s| s.try_into().ok()))
}

/// Parses EIP-712 typed data and computes its signing hash.
///
/// # Errors
/// [`Error::InvalidArgument`] for oversized, too deep, malformed or unresolvable typed data.
pub(crate) fn typed_data(json: &str) -> Result<(Digest32, DomainFacts), Error> {
    const MALFORMED: Error = Error::InvalidArgument("malformed EIP-712 typed data");
    if json.len() > MAX_TYPED_DATA {
        return Err(Error::InvalidArgument("typed data longer than 32 KiB"));
    }
    // serde_json stops at 128 levels; the tighter limit is checked on the parsed tree, before
    // alloy walks it.
    let value: serde_json::Value = serde_json::from_str(json).map_err(|_| MALFORMED)?;
    if depth(&value) > MAX_JSON_DEPTH {
        return Err(Error::InvalidArgument("typed data nested too deeply"));
    }
    let types = value
        .get("types")
        .and_then(serde_json::Value::as_object)
        .ok_or(MALFORMED)?;
    if types.len() > MAX_TYPES {
        return Err(Error::InvalidArgument("typed data declares too many types"));
    }
    let typed: TypedData = serde_json::from_value(value).map_err(|_| MALFORMED)?;
    let digest = typed
        .eip712_signing_hash()
        .map_err(|_| Error::InvalidArgument("EIP-712 typed data does not match its types"))?;
    let domain = DomainFacts {
        name: typed.domain.name.as_ref().map(|n| n.to_string()),
        chain_id: typed.domain.chain_id,
        verifying_contract: typed.domain.verifying_contract,
    };
    Ok((digest32(digest), domain))
}

fn digest32(hash: B256) -> Digest32 {
    Digest32(hash.0)
}

/// Nesting depth of a JSON tree (a scalar is 0). Recursion is bounded by serde_json's own limit
/// of 128 levels.
fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// An address from a policy or request field (exactly 20 bytes).
///
/// # Errors
/// [`Error::InvalidArgument`] with `what` otherwise.
pub(crate) fn address(bytes: &[u8], what: &'static str) -> Result<Address, Error> {
    Address::try_from(bytes).map_err(|_| Error::InvalidArgument(what))
}

/// The enclave's reply for a signed payload.
pub(crate) fn response(
    key_id: &KeyId,
    payload: EthPayload,
    rs: &[u8; 64],
    y_parity: bool,
) -> pb::SignEthereumResponse {
    let digest = payload.digest();
    let mut signature = Vec::with_capacity(65);
    signature.extend_from_slice(rs);
    let (signed_transaction, transaction_hash) = match payload {
        EthPayload::Transaction(unsigned) => {
            let tx = unsigned.tx;
            let r = U256::from_be_slice(&rs[..32]);
            let s = U256::from_be_slice(&rs[32..]);
            let envelope = tx.into_envelope(alloy_primitives::Signature::new(r, s, y_parity));
            let encoded = alloy_eips::eip2718::Encodable2718::encoded_2718(&envelope);
            let hash = *envelope.tx_hash();
            (encoded, hash.to_vec())
        }
        EthPayload::PersonalMessage(_) | EthPayload::TypedData(..) => (Vec::new(), Vec::new()),
    };
    signature.push(27 + u8::from(y_parity));
    pb::SignEthereumResponse {
        key_id: key_id.to_string(),
        signature,
        y_parity: u32::from(y_parity),
        digest: digest.0.to_vec(),
        signed_transaction,
        transaction_hash,
    }
}

#[cfg(test)]
mod tests;
