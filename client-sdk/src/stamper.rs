//! API keys and stamping: every request body is signed by the caller's API key(s) before it is
//! sent; the enclave verifies those signatures against the key's policy.
//!
//! Key files are PKCS#8 PEM (`openssl genpkey -algorithm ed25519`, or P-256 from any tool), so
//! keys can be made, stored and audited with standard tooling.

use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use p256::elliptic_curve::sec1::ToSec1Point as _;
use p256::pkcs8::LineEnding;
use signer_proto::pb;
use zeroize::Zeroizing;

use crate::Error;

/// Signature scheme of an API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKeyScheme {
    /// ECDSA P-256 with SHA-256.
    P256,
    /// Ed25519.
    Ed25519,
}

enum Inner {
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// An API key pair. The private half never leaves the process; both implementations wipe it on
/// drop. `Debug` shows the public half only.
pub struct ApiKeyPair(Inner);

impl core::fmt::Debug for ApiKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("ApiKeyPair")
            .field(&self.public_text())
            .finish()
    }
}

impl ApiKeyPair {
    /// A new key from the OS RNG.
    ///
    /// # Errors
    /// [`Error::Rng`].
    pub fn generate(scheme: ApiKeyScheme) -> Result<Self, Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        match scheme {
            ApiKeyScheme::Ed25519 => {
                getrandom::fill(seed.as_mut())?;
                Ok(Self(Inner::Ed25519(ed25519_dalek::SigningKey::from_bytes(
                    &seed,
                ))))
            }
            ApiKeyScheme::P256 => loop {
                getrandom::fill(seed.as_mut())?;
                // Outside 1..n-1 with probability below 2^-32.
                if let Ok(key) = p256::ecdsa::SigningKey::from_slice(seed.as_slice()) {
                    return Ok(Self(Inner::P256(key)));
                }
            },
        }
    }

    /// Parses a PKCS#8 PEM private key (Ed25519 or P-256).
    ///
    /// # Errors
    /// [`Error::ApiKey`] for anything else.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(Self(Inner::Ed25519(key)));
        }
        p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map(|key| Self(Inner::P256(key)))
            .map_err(|_| Error::ApiKey("not a PKCS#8 PEM Ed25519 or P-256 private key".into()))
    }

    /// The private key as PKCS#8 PEM: for Ed25519 the RFC 8410 v1 form (the private key only),
    /// which stock libraries load (Python's `cryptography` and OpenSSL refuse the v2 form with
    /// the public key that `ed25519-dalek` writes by default); both forms load here.
    ///
    /// # Errors
    /// [`Error::ApiKey`] if encoding fails.
    pub fn to_pem(&self) -> Result<Zeroizing<String>, Error> {
        let pem = match &self.0 {
            Inner::Ed25519(key) => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: key.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_pem(LineEnding::LF),
            Inner::P256(key) => key.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map_err(|e| Error::ApiKey(format!("encoding: {e}")))
    }

    /// Reads a key file.
    ///
    /// # Errors
    /// [`Error::ApiKey`] naming the file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let pem = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| Error::ApiKey(format!("{}: {e}", path.display())))?,
        );
        Self::from_pem(&pem)
    }

    /// Writes the key to a new file readable by its owner only (mode 0600); refuses to
    /// overwrite.
    ///
    /// # Errors
    /// [`Error::ApiKey`] naming the file.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let pem = self.to_pem()?;
        let named = |e: std::io::Error| Error::ApiKey(format!("{}: {e}", path.display()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(named)?;
        file.write_all(pem.as_bytes()).map_err(named)?;
        file.sync_all().map_err(named)
    }

    /// The scheme.
    pub fn scheme(&self) -> ApiKeyScheme {
        match self.0 {
            Inner::P256(_) => ApiKeyScheme::P256,
            Inner::Ed25519(_) => ApiKeyScheme::Ed25519,
        }
    }

    /// The public half as policies name it (P-256 compressed).
    pub fn public(&self) -> pb::ApiKey {
        match &self.0 {
            Inner::P256(key) => pb::ApiKey {
                scheme: pb::StampScheme::P256Sha256.into(),
                public_key: key
                    .verifying_key()
                    .as_affine()
                    .to_sec1_point(true)
                    .as_bytes()
                    .to_vec(),
            },
            Inner::Ed25519(key) => pb::ApiKey {
                scheme: pb::StampScheme::Ed25519.into(),
                public_key: key.verifying_key().to_bytes().to_vec(),
            },
        }
    }

    /// The public half as text: `ed25519:<hex>` or `p256:<hex of the compressed point>`.
    pub fn public_text(&self) -> String {
        api_key_text(&self.public())
    }

    /// This key's stamp over `body` for the deployment `deployment_id`: a signature over the
    /// stamp message (domain string, deployment id, body; see the enclave's SPEC.md).
    pub fn stamp(&self, deployment_id: &str, body: &[u8]) -> pb::Stamp {
        use p256::ecdsa::signature::Signer as _;
        let public = self.public();
        let message = signer_proto::canonical::stamp_message(deployment_id, body);
        let signature = match &self.0 {
            Inner::P256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(&message);
                signature.to_bytes().to_vec()
            }
            Inner::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                key.sign(&message).to_bytes().to_vec()
            }
        };
        pb::Stamp {
            scheme: public.scheme,
            public_key: public.public_key,
            signature,
        }
    }
}

/// An API public key as text: `ed25519:<hex>` or `p256:<hex>`.
pub fn api_key_text(key: &pb::ApiKey) -> String {
    let scheme = match pb::StampScheme::try_from(key.scheme) {
        Ok(pb::StampScheme::P256Sha256) => "p256",
        Ok(pb::StampScheme::Ed25519) => "ed25519",
        _ => "unknown",
    };
    format!("{scheme}:{}", hex::encode(&key.public_key))
}

/// Parses `ed25519:<hex>` or `p256:<hex>` (P-256 in either SEC1 form; normalised to compressed).
///
/// # Errors
/// [`Error::InvalidArgument`].
pub fn parse_api_key(text: &str) -> Result<pb::ApiKey, Error> {
    let bad = || Error::InvalidArgument("API public key must be ed25519:<hex> or p256:<hex>");
    let (scheme, key) = text.split_once(':').ok_or_else(bad)?;
    let bytes = hex::decode(key).map_err(|_| bad())?;
    match scheme {
        "ed25519" if bytes.len() == 32 => Ok(pb::ApiKey {
            scheme: pb::StampScheme::Ed25519.into(),
            public_key: bytes,
        }),
        "p256" => {
            let point = p256::ecdsa::VerifyingKey::from_sec1_bytes(&bytes).map_err(|_| bad())?;
            Ok(pb::ApiKey {
                scheme: pb::StampScheme::P256Sha256.into(),
                public_key: point.as_affine().to_sec1_point(true).as_bytes().to_vec(),
            })
        }
        _ => Err(bad()),
    }
}

/// The API keys that stamp a client's requests: one for a single caller, several where one
/// process holds a quorum (tests, tooling). Approvers in different processes each stamp the
/// same body with [`ApiKeyPair::stamp`] and the request is sent with all their stamps.
#[derive(Debug)]
pub struct Stamper {
    keys: Vec<ApiKeyPair>,
}

impl Stamper {
    /// A stamper over `keys`.
    pub fn new(keys: Vec<ApiKeyPair>) -> Self {
        Self { keys }
    }

    /// A stamper over one key read from a PKCS#8 PEM file.
    ///
    /// # Errors
    /// [`Error::ApiKey`].
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        Self::from_files(&[path])
    }

    /// A stamper over keys read from PKCS#8 PEM files, in order.
    ///
    /// # Errors
    /// [`Error::ApiKey`] naming the first file that fails.
    pub fn from_files(paths: &[&Path]) -> Result<Self, Error> {
        paths
            .iter()
            .map(|path| ApiKeyPair::load(path))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    /// Every key's stamp over `body` for `deployment_id`.
    pub fn stamp(&self, deployment_id: &str, body: &[u8]) -> Vec<pb::Stamp> {
        self.keys
            .iter()
            .map(|k| k.stamp(deployment_id, body))
            .collect()
    }

    /// The public halves, in order.
    pub fn public_keys(&self) -> Vec<pb::ApiKey> {
        self.keys.iter().map(ApiKeyPair::public).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_pkcs8_files_and_stamp_verifiably() {
        let dir = tempfile::tempdir().unwrap();
        for scheme in [ApiKeyScheme::Ed25519, ApiKeyScheme::P256] {
            let key = ApiKeyPair::generate(scheme).unwrap();
            let path = dir.path().join(format!("{scheme:?}.pem"));
            key.save(&path).unwrap();
            assert!(key.save(&path).is_err(), "never overwrites");
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let loaded = ApiKeyPair::load(&path).unwrap();
            assert_eq!(loaded.public(), key.public());
            assert_eq!(loaded.scheme(), scheme);
            assert_eq!(parse_api_key(&key.public_text()).unwrap(), key.public());
            let stamp = loaded.stamp("test", b"body");
            assert_eq!(stamp.signature.len(), 64);
            assert!(!format!("{key:?}").contains("PRIVATE"));
        }
        assert!(
            ApiKeyPair::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
        // Ed25519 is written as RFC 8410's v1 structure: 48 bytes of DER (64 base64 digits),
        // `30 2e 02 01 00 30 05 06 03 2b 65 70 04 22 04 20` then the seed, as RFC 8410's own
        // example; a v2 file with the public key, as other tools write it, still loads.
        let key = ApiKeyPair::generate(ApiKeyScheme::Ed25519).unwrap();
        let pem = key.to_pem().unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(body.len(), 64, "v1 PKCS#8: {body}");
        assert!(body.starts_with("MC4CAQAwBQYDK2VwBCIEI"), "{body}");
        let Inner::Ed25519(inner) = &key.0 else {
            panic!("an Ed25519 key")
        };
        let v2 = inner.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert_eq!(ApiKeyPair::from_pem(&v2).unwrap().public(), key.public());
        assert!(parse_api_key("rsa:00").is_err());
        assert!(parse_api_key("ed25519:0011").is_err());
    }
}
