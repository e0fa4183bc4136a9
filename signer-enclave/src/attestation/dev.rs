//! The development attestor: a **stand-in** for the NSM, for machines without Nitro.
//!
//! Documents have the NSM's format (COSE_Sign1, ES384; payload `module_id`, `digest`,
//! `timestamp`, `pcrs`, `certificate`, `cabundle`, `public_key`, `user_data`, `nonce`), but the
//! chain starts at a development root generated for the deployment (`dev-root.der`, its key in
//! `dev-root.key`, mode 0600). PCR0 is the SHA-384 of the running enclave binary, so changing the
//! code changes the measurement; PCR1..15 are zero. Verifiers pinned to the AWS Nitro root reject
//! these documents; only a verifier explicitly configured with the development root accepts them.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciborium::Value;
use der::{Decode as _, Encode as _};
use p384::ecdsa::signature::Signer as _;
use p384::ecdsa::{DerSignature, Signature, SigningKey};
use p384::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use sha2::{Digest as _, Sha384};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder as _, CertificateBuilder};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfo, SubjectPublicKeyInfoRef};
use x509_cert::time::Validity;
use x509_cert::{Certificate, TbsCertificate};
use zeroize::Zeroizing;

use super::{AttestRequest, Attestor};
use crate::Error;

const ROOT_NAME: &str = "CN=signer development root - NOT FOR PRODUCTION";
const LEAF_NAME: &str = "CN=signer development enclave - NOT FOR PRODUCTION";
/// COSE protected header `{1: -35}` (alg: ES384).
const PROTECTED: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];

/// A certificate profile with fixed names and no extensions.
struct Profile {
    subject: Name,
    issuer: Name,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }
    fn get_subject(&self) -> Name {
        self.subject.clone()
    }
    fn build_extensions(
        &self,
        _: SubjectPublicKeyInfoRef<'_>,
        _: SubjectPublicKeyInfoRef<'_>,
        _: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(Vec::new())
    }
}

fn name(text: &str) -> Result<Name, Error> {
    Name::from_str(text).map_err(|_| Error::Internal)
}

fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    bytes[0] &= 0x7f; // positive
    SerialNumber::new(&bytes).map_err(|_| Error::Internal)
}

fn certificate(
    subject: &SigningKey,
    subject_name: &str,
    issuer: &SigningKey,
    issuer_name: &str,
    lifetime: Duration,
) -> Result<Vec<u8>, Error> {
    let spki =
        SubjectPublicKeyInfo::from_key(subject.verifying_key()).map_err(|_| Error::Internal)?;
    let profile = Profile {
        subject: name(subject_name)?,
        issuer: name(issuer_name)?,
    };
    let validity = Validity::from_now(lifetime).map_err(|_| Error::Internal)?;
    let builder = CertificateBuilder::new(profile, random_serial()?, validity, spki)
        .map_err(|_| Error::Internal)?;
    let cert: Certificate = builder
        .build::<_, DerSignature>(issuer)
        .map_err(|_| Error::Internal)?;
    cert.to_der().map_err(|_| Error::Internal)
}

/// The development attestor. Never in production.
pub struct DevAttestor {
    root_der: Vec<u8>,
    leaf_der: Vec<u8>,
    leaf_key: SigningKey,
    pcr0: [u8; 48],
    module_id: String,
}

impl core::fmt::Debug for DevAttestor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DevAttestor")
            .field("module_id", &self.module_id)
            .finish_non_exhaustive()
    }
}

impl DevAttestor {
    /// Loads the development root from `dir` (creating it on first use) and makes this process's
    /// leaf key and certificate. PCR0 is measured from the running binary.
    ///
    /// # Errors
    /// [`Error::Io`] on file trouble, [`Error::Attestation`] for an unreadable root key.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let key_path = dir.join("dev-root.key");
        let cert_path = dir.join("dev-root.der");
        let root_key = if key_path.exists() {
            let der = Zeroizing::new(std::fs::read(&key_path)?);
            SigningKey::from_pkcs8_der(&der)
                .map_err(|_| Error::Attestation("unreadable development root key"))?
        } else {
            let mut bytes = Zeroizing::new([0u8; 48]);
            let key = loop {
                getrandom::fill(bytes.as_mut_slice())?;
                if let Ok(key) = SigningKey::from_slice(bytes.as_slice()) {
                    break key;
                }
            };
            let der = key.to_pkcs8_der().map_err(|_| Error::Internal)?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)?;
            file.write_all(der.as_bytes())?;
            let _ = std::fs::remove_file(&cert_path);
            tracing::warn!(dir = %dir.display(), "created a development attestation root (NOT FOR PRODUCTION)");
            key
        };
        let root_der = match std::fs::read(&cert_path) {
            Ok(der) if Certificate::from_der(&der).is_ok() => der,
            _ => {
                let der = certificate(
                    &root_key,
                    ROOT_NAME,
                    &root_key,
                    ROOT_NAME,
                    Duration::from_secs(10 * 365 * 86_400),
                )?;
                std::fs::write(&cert_path, &der)?;
                der
            }
        };
        let mut leaf_bytes = Zeroizing::new([0u8; 48]);
        let leaf_key = loop {
            getrandom::fill(leaf_bytes.as_mut_slice())?;
            if let Ok(key) = SigningKey::from_slice(leaf_bytes.as_slice()) {
                break key;
            }
        };
        // Like Nitro's leaf certificates, valid for three hours.
        let leaf_der = certificate(
            &leaf_key,
            LEAF_NAME,
            &root_key,
            ROOT_NAME,
            Duration::from_secs(3 * 3600),
        )?;
        let binary = std::fs::read(std::env::current_exe()?)?;
        let pcr0: [u8; 48] = Sha384::digest(&binary).into();
        let mut module = [0u8; 8];
        getrandom::fill(&mut module)?;
        Ok(Self {
            root_der,
            leaf_der,
            leaf_key,
            pcr0,
            module_id: format!("dev-enclave-{}", hex::encode(module)),
        })
    }

    /// PCR0 of this enclave: the SHA-384 of its binary.
    pub fn pcr0(&self) -> [u8; 48] {
        self.pcr0
    }

    /// The development root certificate (DER) that verifiers must be configured with.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    fn payload(&self, request: &AttestRequest<'_>) -> Result<Vec<u8>, Error> {
        let optional = |b: Option<&[u8]>| b.map_or(Value::Null, |b| Value::Bytes(b.to_vec()));
        let mut pcrs = BTreeMap::new();
        for index in 0..16u8 {
            pcrs.insert(
                index,
                if index == 0 {
                    self.pcr0.to_vec()
                } else {
                    vec![0; 48]
                },
            );
        }
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let text = |s: &str| Value::Text(s.to_owned());
        let map = Value::Map(vec![
            (text("module_id"), text(&self.module_id)),
            (text("digest"), text("SHA384")),
            (text("timestamp"), Value::Integer(timestamp.into())),
            (
                text("pcrs"),
                Value::Map(
                    pcrs.into_iter()
                        .map(|(i, v)| (Value::Integer(i.into()), Value::Bytes(v)))
                        .collect(),
                ),
            ),
            (text("certificate"), Value::Bytes(self.leaf_der.clone())),
            (
                text("cabundle"),
                Value::Array(vec![Value::Bytes(self.root_der.clone())]),
            ),
            (text("public_key"), optional(request.public_key)),
            (text("user_data"), optional(request.user_data)),
            (text("nonce"), optional(request.nonce)),
        ]);
        encode(&map)
    }
}

fn encode(value: &Value) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|_| Error::Internal)?;
    Ok(out)
}

impl Attestor for DevAttestor {
    fn name(&self) -> &'static str {
        "development"
    }

    fn attest(&self, request: AttestRequest<'_>) -> Result<Vec<u8>, Error> {
        request.check()?;
        let payload = self.payload(&request)?;
        let to_be_signed = encode(&Value::Array(vec![
            Value::Text("Signature1".into()),
            Value::Bytes(PROTECTED.to_vec()),
            Value::Bytes(Vec::new()),
            Value::Bytes(payload.clone()),
        ]))?;
        let signature: Signature = self.leaf_key.sign(&to_be_signed);
        encode(&Value::Array(vec![
            Value::Bytes(PROTECTED.to_vec()),
            Value::Map(Vec::new()),
            Value::Bytes(payload),
            Value::Bytes(signature.to_bytes().to_vec()),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use signer_client::attestation::{AttestationPolicy, TrustAnchor, verify};

    use super::*;

    fn policy(root: &[u8], pcr0: &[u8]) -> AttestationPolicy {
        AttestationPolicy {
            root: TrustAnchor::development(root.to_vec()),
            allowed_pcrs: vec![BTreeMap::from([(0, pcr0.to_vec())])],
            expected_nonce: Some(b"nonce-0123456789".to_vec()),
            max_age: Duration::from_secs(60),
        }
    }

    #[test]
    fn documents_verify_only_against_the_development_root_and_this_binary() {
        let dir = tempfile::tempdir().unwrap();
        let attestor = DevAttestor::open(dir.path()).unwrap();
        let binary = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(attestor.pcr0(), <[u8; 48]>::from(Sha384::digest(&binary)));
        let request = AttestRequest {
            public_key: Some(b"enclave key"),
            user_data: None,
            nonce: Some(b"nonce-0123456789"),
        };
        let document = attestor.attest(request).unwrap();

        let verified = verify(
            &document,
            &policy(attestor.root_der(), &attestor.pcr0()),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(verified.public_key.as_deref(), Some(&b"enclave key"[..]));
        assert_eq!(verified.pcrs.len(), 16);

        let mut aws = policy(attestor.root_der(), &attestor.pcr0());
        aws.root = TrustAnchor::aws_nitro_g1();
        assert!(
            verify(&document, &aws, SystemTime::now()).is_err(),
            "production verifiers reject development documents"
        );
        assert!(
            verify(
                &document,
                &policy(attestor.root_der(), &[0; 48]),
                SystemTime::now()
            )
            .is_err()
        );
        let mut other_nonce = policy(attestor.root_der(), &attestor.pcr0());
        other_nonce.expected_nonce = Some(b"another nonce...".to_vec());
        assert!(verify(&document, &other_nonce, SystemTime::now()).is_err());
    }

    #[test]
    fn the_root_persists_and_leaves_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let first = DevAttestor::open(dir.path()).unwrap();
        let second = DevAttestor::open(dir.path()).unwrap();
        assert_eq!(first.root_der(), second.root_der());
        assert_ne!(first.leaf_der, second.leaf_der);
        let document = second
            .attest(AttestRequest {
                nonce: Some(b"nonce-0123456789"),
                ..AttestRequest::default()
            })
            .unwrap();
        assert!(
            verify(
                &document,
                &policy(first.root_der(), &first.pcr0()),
                SystemTime::now()
            )
            .is_ok()
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("dev-root.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn refuses_fields_over_the_nsm_limits() {
        let dir = tempfile::tempdir().unwrap();
        let attestor = DevAttestor::open(dir.path()).unwrap();
        let big = vec![0u8; 1025];
        assert!(matches!(
            attestor.attest(AttestRequest {
                public_key: Some(&big),
                ..AttestRequest::default()
            }),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            attestor.attest(AttestRequest {
                nonce: Some(&big[..513]),
                ..AttestRequest::default()
            }),
            Err(Error::InvalidArgument(_))
        ));
    }
}
