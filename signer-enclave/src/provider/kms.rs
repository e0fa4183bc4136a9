//! The AWS KMS key-wrapping provider: keyring keys exist in plaintext only inside an attested
//! enclave.
//!
//! * New keyring: `GenerateDataKey` (AES_256) with a `Recipient`; KMS returns the key encrypted
//!   to the enclave's ephemeral RSA key (`CiphertextForRecipient`) and the `CiphertextBlob` the
//!   host stores.
//! * Boot: `Decrypt` of the stored blob, with a `Recipient`.
//! * `Recipient` = an attestation document whose `public_key` is a fresh RSA-2048 key made for
//!   that one call (RSAES_OAEP_SHA_256). The key policy's `kms:RecipientAttestation:*` conditions
//!   decide which enclave images may unwrap.
//! * The encryption context binds the keyring id, so the host cannot swap wrapped keys.
//! * Fail closed: a response carrying `Plaintext`, or lacking `CiphertextForRecipient`, is an
//!   error.
//!
//! Credentials come from the host (`SetCredentials`); the enclave never reaches IMDS.
//!
//! Inside Nitro, KMS is reached through the parent's `vsock-proxy` ([`vsock`]); on a developer
//! machine the client connects to `endpoint` (a KMS-API test server) directly.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError, future};
use aws_sdk_kms::config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::types::{DataKeySpec, KeyEncryptionMechanism, RecipientInfo};
use aws_smithy_types::Blob;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use super::KeyWrapper;
mod arn;
pub mod roots;
pub mod vsock;

pub use self::arn::KeyArn;

use super::recipient::Recipient;
use crate::Error;
use crate::attestation::{AttestRequest, Attestor};
use crate::ids::KeyringId;
use crate::secret::{KeyringKey, SECRET_LEN};

/// The encryption-context key that binds a wrapped keyring key to its keyring id.
pub const CONTEXT_KEYRING: &str = "signer:keyring-id";

/// Credentials handed over by the host; empty until the first `SetCredentials`.
#[derive(Clone, Debug, Default)]
pub struct HostCredentials(Arc<RwLock<Option<Credentials>>>);

impl HostCredentials {
    /// Replaces the credentials.
    pub fn set(&self, credentials: Credentials) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(credentials);
    }
}

impl ProvideCredentials for HostCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let current = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        future::ProvideCredentials::ready(current.ok_or_else(|| {
            CredentialsError::not_loaded("the host has not sent AWS credentials yet")
        }))
    }
}

/// Where and how to call KMS.
#[derive(Clone, Debug)]
pub struct KmsConfig {
    /// The KMS key that wraps keyring keys; its region is the one called.
    pub key_arn: KeyArn,
    /// Endpoint URL; `None` for `https://kms.<region>.amazonaws.com`.
    pub endpoint: Option<String>,
    /// Inside Nitro: reach KMS through this vsock-proxy address (the parent, e.g. `vsock://3:8000`)
    /// via a loopback forwarder on 127.0.0.1:443. `None` connects to the endpoint directly.
    pub vsock_proxy: Option<signer_proto::transport::Address>,
}

/// The AWS KMS provider.
pub struct KmsProvider {
    client: aws_sdk_kms::Client,
    key_arn: KeyArn,
    endpoint: String,
    attestor: Arc<dyn Attestor>,
}

impl core::fmt::Debug for KmsProvider {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KmsProvider")
            .field("key_arn", &self.key_arn)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl KmsProvider {
    /// A provider calling KMS with the host's credentials and this enclave's attestations.
    /// TLS to KMS trusts only the built-in Amazon Trust Services roots ([`roots`]).
    ///
    /// # Errors
    /// [`Error::Provider`] if the TLS context cannot be built.
    pub fn new(
        config: KmsConfig,
        credentials: HostCredentials,
        attestor: Arc<dyn Attestor>,
    ) -> Result<Self, Error> {
        let region = config.key_arn.region().to_owned();
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://kms.{region}.amazonaws.com"));
        let mut builder = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .credentials_provider(credentials)
            // One quick retry for transient faults; the host's loader retries whole loads with
            // its own growing backoff.
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .operation_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(url) = config.endpoint {
            builder = builder.endpoint_url(url);
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(roots::tls_context()?);
        let client = if config.vsock_proxy.is_some() {
            // TLS to the real KMS host name, over a TCP connection the loopback forwarder carries
            // to the vsock-proxy (started by the caller with `vsock::forward`).
            http.build_with_resolver(vsock::KmsResolver::new(&region))
        } else {
            http.build_https()
        };
        builder = builder.http_client(client);
        Ok(Self {
            client: aws_sdk_kms::Client::from_conf(builder.build()),
            key_arn: config.key_arn,
            endpoint,
            attestor,
        })
    }

    /// Refuses an answer about any key but the configured one (a KMS endpoint the host
    /// redirected, or a grant on another key).
    fn check_key(&self, call: &'static str, answered: Option<&str>) -> Result<(), Error> {
        if answered == Some(self.key_arn.as_str()) {
            return Ok(());
        }
        tracing::error!(call, expected = %self.key_arn, answered = ?answered, "KMS answered for another key");
        Err(Error::Provider(
            "KMS answered for another key than the configured ARN: refused",
        ))
    }

    /// A fresh recipient key and the attestation document carrying its public half.
    fn recipient(&self) -> Result<(Recipient, RecipientInfo), Error> {
        let recipient = Recipient::generate()?;
        let document = self.attestor.attest(AttestRequest {
            public_key: Some(recipient.public_key_der()),
            ..AttestRequest::default()
        })?;
        let info = RecipientInfo::builder()
            .key_encryption_algorithm(KeyEncryptionMechanism::RsaesOaepSha256)
            .attestation_document(Blob::new(document))
            .build();
        Ok((recipient, info))
    }

    /// Turns a KMS answer into the keyring key, failing closed on anything but the attested form.
    fn keyring_key(
        recipient: Recipient,
        plaintext: Option<&Blob>,
        for_recipient: Option<&Blob>,
    ) -> Result<KeyringKey, Error> {
        if plaintext.is_some_and(|p| !p.as_ref().is_empty()) {
            tracing::error!(
                "KMS returned Plaintext to an attested request: refusing it (is this really KMS?)"
            );
            return Err(Error::Provider(
                "KMS returned Plaintext instead of CiphertextForRecipient: refused",
            ));
        }
        let sealed = for_recipient.ok_or(Error::Provider(
            "KMS response lacks CiphertextForRecipient: refused",
        ))?;
        let opened = recipient.open(sealed.as_ref())?;
        let key: &[u8; SECRET_LEN] = opened
            .as_slice()
            .try_into()
            .map_err(|_| Error::Provider("KMS data key is not 256 bits"))?;
        Ok(KeyringKey::from_bytes(key))
    }

    /// Logs what failed and why it probably did, and returns a static, secret-free error.
    fn explain<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
        &self,
        call: &'static str,
        error: &SdkError<E, R>,
    ) -> Error {
        let (code, cause): (&str, &'static str) = match error {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => (
                "unreachable",
                "KMS unreachable: is vsock-proxy (or the endpoint) up and reachable?",
            ),
            SdkError::ServiceError(service) => match service.err().code().unwrap_or("unknown") {
                "AccessDeniedException" => (
                    "AccessDeniedException",
                    "KMS denied the request: attestation rejected by the key policy (PCR mismatch?) or the role lacks permission",
                ),
                "NotFoundException" => (
                    "NotFoundException",
                    "KMS key not found: wrong key id or wrong region?",
                ),
                "InvalidCiphertextException" => (
                    "InvalidCiphertextException",
                    "KMS refused the wrapped key: wrong key, or the encryption context (keyring id) does not match",
                ),
                "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException" => (
                    "credentials",
                    "KMS rejected the credentials: expired, invalid, or for another region",
                ),
                "ValidationException" => (
                    "ValidationException",
                    "KMS rejected the request: attestation document or parameters malformed",
                ),
                "KMSInvalidStateException" | "DisabledException" => {
                    ("key state", "KMS key disabled or pending deletion")
                }
                _ => ("service error", "KMS refused the request"),
            },
            _ => (
                "client error",
                "KMS call failed before reaching KMS (credentials not yet sent by the host?)",
            ),
        };
        let message = match error {
            SdkError::ServiceError(service) => {
                service.err().message().unwrap_or_default().to_owned()
            }
            _ => String::new(),
        };
        tracing::error!(call, code, cause, endpoint = %self.endpoint, kms_message = %message, "KMS call failed");
        Error::Provider(cause)
    }
}

#[async_trait::async_trait]
impl KeyWrapper for KmsProvider {
    fn name(&self) -> &'static str {
        "aws-kms"
    }

    async fn generate(&self, keyring_id: &KeyringId) -> Result<(KeyringKey, Vec<u8>), Error> {
        let (recipient, info) = self.recipient()?;
        let output = self
            .client
            .generate_data_key()
            .key_id(self.key_arn.as_str())
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_KEYRING, keyring_id.to_string())
            .recipient(info)
            .send()
            .await
            .map_err(|e| self.explain("GenerateDataKey", &e))?;
        self.check_key("GenerateDataKey", output.key_id())?;
        let key = Self::keyring_key(
            recipient,
            output.plaintext(),
            output.ciphertext_for_recipient(),
        )?;
        let blob = output
            .ciphertext_blob()
            .ok_or(Error::Provider("KMS response lacks CiphertextBlob"))?;
        Ok((key, blob.as_ref().to_vec()))
    }

    async fn unwrap(&self, keyring_id: &KeyringId, wrapped: &[u8]) -> Result<KeyringKey, Error> {
        let (recipient, info) = self.recipient()?;
        let output = self
            .client
            .decrypt()
            .key_id(self.key_arn.as_str())
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context(CONTEXT_KEYRING, keyring_id.to_string())
            .recipient(info)
            .send()
            .await
            .map_err(|e| self.explain("Decrypt", &e))?;
        self.check_key("Decrypt", output.key_id())?;
        Self::keyring_key(
            recipient,
            output.plaintext(),
            output.ciphertext_for_recipient(),
        )
    }
}

/// Credentials from the host's `SetCredentials` message.
pub fn credentials(
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration_unix: u64,
) -> Credentials {
    let expiry = (expiration_unix > 0).then(|| UNIX_EPOCH + Duration::from_secs(expiration_unix));
    let token = (!session_token.is_empty()).then_some(session_token);
    Credentials::new(
        access_key_id,
        secret_access_key,
        token,
        expiry.filter(|e| *e > SystemTime::UNIX_EPOCH),
        "signer-host",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoAttestor;

    impl Attestor for NoAttestor {
        fn name(&self) -> &'static str {
            "none"
        }

        fn attest(&self, _: AttestRequest<'_>) -> Result<Vec<u8>, Error> {
            Err(Error::Attestation("no attestor in this test"))
        }
    }

    #[test]
    fn answers_about_another_key_are_refused() {
        let arn: KeyArn =
            "arn:aws:kms:eu-central-1:111122223333:key/1111aaaa-11aa-11aa-11aa-111111aaaaaa"
                .parse()
                .unwrap();
        let provider = KmsProvider::new(
            KmsConfig {
                key_arn: arn.clone(),
                endpoint: Some("http://127.0.0.1:9".into()),
                vsock_proxy: None,
            },
            HostCredentials::default(),
            Arc::new(NoAttestor),
        )
        .unwrap();
        assert!(provider.check_key("Decrypt", Some(arn.as_str())).is_ok());
        let other =
            "arn:aws:kms:eu-central-1:111122223333:key/2222bbbb-22bb-22bb-22bb-222222bbbbbb";
        for answered in [
            Some(other),
            Some("1111aaaa-11aa-11aa-11aa-111111aaaaaa"),
            None,
        ] {
            assert!(matches!(
                provider.check_key("Decrypt", answered),
                Err(Error::Provider(_))
            ));
        }
    }
}
