//! The COSE_Sign1 envelope and the attestation payload, parsed from CBOR with NSM's limits.

use std::collections::BTreeMap;

use ciborium::Value;

use super::Error;
use super::bad;

/// An untagged or tag-18 COSE_Sign1 with protected header `{1: -35}` (ES384).
pub(super) struct CoseSign1 {
    protected: Vec<u8>,
    pub(super) payload: Vec<u8>,
    pub(super) signature: Vec<u8>,
}

fn bytes(value: Value, what: &'static str) -> Result<Vec<u8>, Error> {
    value.into_bytes().map_err(|_| bad(what))
}

impl CoseSign1 {
    pub(super) fn parse(document: &[u8]) -> Result<Self, Error> {
        let value: Value =
            ciborium::from_reader(document).map_err(|_| bad("document is not CBOR"))?;
        let value = match value {
            Value::Tag(18, inner) => *inner,
            other => other,
        };
        let Ok(mut parts) = value.into_array() else {
            return Err(bad("document is not a COSE_Sign1 array"));
        };
        if parts.len() != 4 {
            return Err(bad("document is not a COSE_Sign1 array"));
        }
        let signature = bytes(
            parts.pop().expect("four parts qed"),
            "COSE signature is not a byte string",
        )?;
        let payload = bytes(
            parts.pop().expect("four parts qed"),
            "payload is not a byte string",
        )?;
        let _unprotected = parts.pop();
        let protected = bytes(
            parts.pop().expect("four parts qed"),
            "protected header is not a byte string",
        )?;
        let header: Value = ciborium::from_reader(protected.as_slice())
            .map_err(|_| bad("protected header is not CBOR"))?;
        let es384 = Value::Map(vec![(
            Value::Integer(1.into()),
            Value::Integer((-35).into()),
        )]);
        if header != es384 {
            return Err(bad("protected header is not {1: -35} (ES384)"));
        }
        if signature.len() != 96 {
            return Err(bad("COSE signature is not 96 bytes"));
        }
        Ok(Self {
            protected,
            payload,
            signature,
        })
    }

    /// `Sig_structure = ["Signature1", protected, h'', payload]`, CBOR-encoded (RFC 9052 §4.4).
    pub(super) fn to_be_signed(&self) -> Result<Vec<u8>, Error> {
        let structure = Value::Array(vec![
            Value::Text("Signature1".into()),
            Value::Bytes(self.protected.clone()),
            Value::Bytes(Vec::new()),
            Value::Bytes(self.payload.clone()),
        ]);
        let mut out = Vec::with_capacity(self.payload.len() + 64);
        ciborium::into_writer(&structure, &mut out)
            .map_err(|_| bad("cannot encode Sig_structure"))?;
        Ok(out)
    }
}

/// The attestation payload's fields.
pub(super) struct Payload {
    pub(super) module_id: String,
    pub(super) timestamp_ms: u64,
    pub(super) pcrs: BTreeMap<u16, Vec<u8>>,
    pub(super) certificate: Vec<u8>,
    pub(super) cabundle: Vec<Vec<u8>>,
    pub(super) public_key: Option<Vec<u8>>,
    pub(super) user_data: Option<Vec<u8>>,
    pub(super) nonce: Option<Vec<u8>>,
}

/// An optional byte field: absent or null is `None`; otherwise a byte string of at most `max`.
fn optional_bytes(
    value: Option<Value>,
    max: usize,
    what: &'static str,
) -> Result<Option<Vec<u8>>, Error> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bytes(b)) if b.len() <= max => Ok(Some(b)),
        Some(_) => Err(bad(what)),
    }
}

impl Payload {
    pub(super) fn parse(payload: &[u8]) -> Result<Self, Error> {
        let value: Value =
            ciborium::from_reader(payload).map_err(|_| bad("payload is not CBOR"))?;
        let Ok(entries) = value.into_map() else {
            return Err(bad("payload is not a map"));
        };
        let mut fields: BTreeMap<String, Value> = BTreeMap::new();
        for (key, value) in entries {
            let Ok(key) = key.into_text() else {
                return Err(bad("payload key is not text"));
            };
            if fields.insert(key, value).is_some() {
                return Err(bad("payload repeats a field"));
            }
        }
        let mut take = |name: &str| fields.remove(name);
        let module_id = take("module_id")
            .and_then(|v| v.into_text().ok())
            .filter(|m| !m.is_empty() && m.len() <= 256);
        let digest = take("digest").and_then(|v| v.into_text().ok());
        if digest.as_deref() != Some("SHA384") {
            return Err(bad("digest is not SHA384"));
        }
        let timestamp_ms = take("timestamp")
            .and_then(|v| v.into_integer().ok())
            .and_then(|i| u64::try_from(i).ok())
            .filter(|t| *t > 0)
            .ok_or(bad("timestamp missing or malformed"))?;
        let Some(Ok(pcr_entries)) = take("pcrs").map(Value::into_map) else {
            return Err(bad("pcrs missing"));
        };
        if pcr_entries.is_empty() || pcr_entries.len() > 32 {
            return Err(bad("pcrs count out of range"));
        }
        let mut pcrs = BTreeMap::new();
        for (index, value) in pcr_entries {
            let index = index
                .into_integer()
                .ok()
                .and_then(|i| u16::try_from(i).ok())
                .filter(|i| *i < 32)
                .ok_or(bad("PCR index out of range"))?;
            let value = value
                .into_bytes()
                .ok()
                .filter(|v| matches!(v.len(), 32 | 48 | 64))
                .ok_or(bad("PCR value malformed"))?;
            pcrs.insert(index, value);
        }
        let certificate = take("certificate")
            .and_then(|v| v.into_bytes().ok())
            .filter(|c| (1..=4096).contains(&c.len()))
            .ok_or(bad("certificate missing or malformed"))?;
        let Some(Ok(bundle)) = take("cabundle").map(Value::into_array) else {
            return Err(bad("cabundle missing"));
        };
        let cabundle = bundle
            .into_iter()
            .map(|c| {
                c.into_bytes()
                    .ok()
                    .filter(|c| (1..=4096).contains(&c.len()))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or(bad("cabundle entry malformed"))?;
        Ok(Self {
            module_id: module_id.ok_or(bad("module_id missing or malformed"))?,
            timestamp_ms,
            pcrs,
            certificate,
            cabundle,
            public_key: optional_bytes(take("public_key"), 1024, "public_key malformed")?,
            user_data: optional_bytes(take("user_data"), 512, "user_data malformed")?,
            nonce: optional_bytes(take("nonce"), 512, "nonce malformed")?,
        })
    }
}
