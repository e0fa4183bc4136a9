//! Key administration: keyrings with admin sets, key creation under an explicit policy,
//! policy changes (import is in `import.rs`). Each reply is checked against the attested enclave's
//! signed statement, and a key's policy against the one requested, before it is returned.

use prost::Message as _;
use signer_proto::pb;
use signer_proto::pb::request_body::Operation;

use super::Client;
use super::call::{Fresh, body_hash};
use crate::Error;
use crate::policy;
use crate::verify::KeyInfo;

impl Client {
    pub(super) fn stamper_policy(&self) -> Result<pb::Policy, Error> {
        policy::default_for(
            self.stamper
                .as_ref()
                .ok_or(Error::NotConfigured("an API key (stamper) is required"))?,
        )
    }

    /// Creates a keyring administered by `admins` (`threshold` of them authorise each key
    /// creation). The client's API keys must include a quorum of the enclave's keyring
    /// creators and **every** named admin: the request is each admin's proof of possession and
    /// consent. Returns the keyring id once the enclave's statement verifies.
    ///
    /// If an answer is lost after the enclave created the keyring, the retry is refused as a
    /// replay and the keyring stays unknown to the caller (it holds no keys).
    ///
    /// # Errors
    /// Service errors; [`Error::Verification`].
    pub async fn create_keyring(
        &self,
        admins: Vec<pb::ApiKey>,
        threshold: u32,
    ) -> Result<String, Error> {
        let admins = pb::KeyringAdmins { admins, threshold };
        let operation = Operation::CreateKeyring(pb::CreateKeyringBody {
            admins: Some(admins.clone()),
        });
        let (response, request) = self
            .call(
                Fresh::WhenExpired,
                || self.envelope(operation.clone()),
                |mut c, r| async move { c.create_keyring(r).await },
            )
            .await?;
        let binding = body_hash(&request.body);
        let check = |identity: &crate::AttestedIdentity| {
            identity.check_keyring(
                &response.keyring_id,
                response.statement.as_ref(),
                &admins,
                &binding,
            )
        };
        if check(&self.enclave_identity(false).await?).is_err() {
            check(&self.enclave_identity(true).await?)?;
        }
        Ok(response.keyring_id)
    }

    /// Creates a key in `keyring_id` under the default policy: this client's API keys approve
    /// and administer it (any one of them; see [`policy::default_for`]).
    ///
    /// A retry after `UNAVAILABLE` resends the same stamped body, so it never creates a second
    /// key: if the first attempt was carried out and only its answer lost, the retry is refused
    /// (`UNAUTHENTICATED`) and that key is never returned to anyone, so nothing can be deposited
    /// to it. Only a body the enclave calls expired (it restarted) is stamped afresh, which can
    /// leave such an orphan behind.
    ///
    /// # Errors
    /// Service errors; [`Error::Verification`] if the reply does not trace to the attested
    /// enclave, is inconsistent, or carries another policy.
    pub async fn create_key(&self, keyring_id: &str, label: &str) -> Result<KeyInfo, Error> {
        self.create_key_with(keyring_id, label, self.stamper_policy()?)
            .await
    }

    /// Creates a key in `keyring_id` under exactly `policy` (its version is set by the
    /// enclave). The reply must carry that policy, canonically encoded at version 1.
    ///
    /// # Errors
    /// As [`Client::create_key`].
    pub async fn create_key_with(
        &self,
        keyring_id: &str,
        label: &str,
        policy: pb::Policy,
    ) -> Result<KeyInfo, Error> {
        self.create(keyring_id, label, policy, pb::KeyKind::Secp256k1)
            .await
    }

    /// Creates an HD root (BIP-32, from a 256-bit seed drawn in the enclave) in `keyring_id`
    /// under exactly `policy`, which must carry `hd` rules (see [`policy::hd_root_for`]). The
    /// reply is the root's: its master public key and fingerprint; use
    /// [`Client::derived_key`] for the keys and xpubs under it.
    ///
    /// # Errors
    /// As [`Client::create_key`]; [`Error::Verification`] if the reply is not an HD root.
    pub async fn create_hd_root(
        &self,
        keyring_id: &str,
        label: &str,
        policy: pb::Policy,
    ) -> Result<KeyInfo, Error> {
        let info = self
            .create(keyring_id, label, policy, pb::KeyKind::HdRoot)
            .await?;
        if info.hd.is_none() {
            return Err(Error::Verification("the enclave did not create an HD root"));
        }
        Ok(info)
    }

    async fn create(
        &self,
        keyring_id: &str,
        label: &str,
        policy: pb::Policy,
        kind: pb::KeyKind,
    ) -> Result<KeyInfo, Error> {
        let expected = policy::canonical(&policy, 1)?.encode_to_vec();
        let operation = Operation::CreateKey(pb::CreateKeyBody {
            keyring_id: keyring_id.to_owned(),
            label: label.to_owned(),
            policy: Some(policy),
            kind: kind.into(),
        });
        let (response, request) = self
            .call(
                Fresh::WhenExpired,
                || self.envelope(operation.clone()),
                |mut c, r| async move { c.create_key(r).await },
            )
            .await?;
        self.checked_key(
            response.key,
            &body_hash(&request.body),
            None,
            Some(&expected),
        )
        .await
    }

    /// Replaces a key's policy. The client's API keys must satisfy the current policy's admin
    /// quorum. The change names the current policy (from a fresh, verified `GetPublicKey`), so it
    /// cannot be replayed onto a later one; the reply must carry exactly `policy` at the next
    /// version. If the answer is lost (the enclave restarted, say) and the retry is refused,
    /// the key is fetched again: when it already carries the new policy, that is the answer.
    ///
    /// # Errors
    /// Service errors; [`Error::Verification`].
    pub async fn update_policy(&self, key_id: &str, policy: pb::Policy) -> Result<KeyInfo, Error> {
        let current = self.fresh_public_key(key_id).await?;
        let next = current
            .policy_version
            .checked_add(1)
            .ok_or(Error::InvalidArgument("policy version exhausted"))?;
        let expected = policy::canonical(&policy, next)?;
        let operation = Operation::UpdatePolicy(pb::UpdatePolicyBody {
            key_id: key_id.to_owned(),
            current_policy_hash: current.policy_hash.to_vec(),
            policy: Some(policy),
        });
        let sent = self
            .call(
                Fresh::WhenExpired,
                || self.envelope(operation.clone()),
                |mut c, r| async move { c.update_policy(r).await },
            )
            .await;
        match sent {
            Ok((response, request)) => {
                self.checked_key(
                    response.key,
                    &body_hash(&request.body),
                    Some(key_id),
                    Some(&expected.encode_to_vec()),
                )
                .await
            }
            Err(error) => {
                let now = self.fresh_public_key(key_id).await?;
                if now.policy == expected {
                    Ok(now)
                } else {
                    Err(error)
                }
            }
        }
    }
}
