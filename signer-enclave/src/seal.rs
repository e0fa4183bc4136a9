//! Sealed wallet records: AES-256-GCM under the keyring key, bound to key id, keyring id, public
//! key and policy hash through the associated data. Two kinds, told apart by the version byte and
//! domain-separated in the associated data: a single secret (version 1) and an HD root's master
//! secret and chain code (version 2). Format in `SPEC.md`.

pub mod frame;

use crate::Error;
use crate::ids::{KeyId, KeyringId};
use zeroize::Zeroizing;

use crate::hd::HdRoot;
use crate::secret::{ChainCode, KeyringKey, SECRET_LEN, WalletSecret};

/// Version byte of the sealed-record format.
pub const RECORD_VERSION: u8 = 1;
/// Length of a sealed record: version, 12-byte nonce, 32-byte ciphertext, 16-byte tag.
pub const RECORD_LEN: usize = frame::HEADER_LEN + SECRET_LEN + frame::TAG_LEN;
/// Version byte of an HD root's sealed record.
pub const ROOT_RECORD_VERSION: u8 = 2;
/// Length of an HD root's sealed record: version, nonce, 64-byte ciphertext (master secret ‖
/// chain code), tag.
pub const ROOT_RECORD_LEN: usize = frame::HEADER_LEN + 2 * SECRET_LEN + frame::TAG_LEN;

const RECORD_DOMAIN: &[u8] = b"signer.v1 wallet record\0";
const ROOT_RECORD_DOMAIN: &[u8] = b"signer.v1 hd root record\0";
const ADMINS_SEAL_DOMAIN: &[u8] = b"signer.v1 keyring admins seal\0";
/// Length of a keyring's admin seal: version, 12-byte nonce, 16-byte tag.
pub const ADMINS_SEAL_LEN: usize = frame::HEADER_LEN + frame::TAG_LEN;

pub use signer_proto::canonical::policy_hash;

/// What a sealed record is bound to: any change to these makes it fail to open.
#[derive(Debug)]
pub struct Binding<'a> {
    /// The wallet key's id.
    pub key_id: &'a KeyId,
    /// The keyring sealing it.
    pub keyring_id: &'a KeyringId,
    /// SEC1 compressed public key.
    pub public_key: &'a [u8; 33],
    /// SHA-256 of the key's policy.
    pub policy_hash: &'a [u8; 32],
}

impl Binding<'_> {
    fn associated_data(&self, domain: &[u8]) -> Vec<u8> {
        let key_id = self.key_id.to_string();
        let keyring_id = self.keyring_id.to_string();
        let mut aad =
            Vec::with_capacity(domain.len() + 2 + key_id.len() + keyring_id.len() + 33 + 32);
        aad.extend_from_slice(domain);
        // Ids have fixed lengths; the length bytes make the encoding unambiguous regardless.
        for part in [key_id.as_bytes(), keyring_id.as_bytes()] {
            aad.push(u8::try_from(part.len()).expect("ids are 34 or 35 bytes long qed"));
            aad.extend_from_slice(part);
        }
        aad.extend_from_slice(self.public_key);
        aad.extend_from_slice(self.policy_hash);
        aad
    }
}

/// Seals a wallet secret under a keyring key.
///
/// # Errors
/// [`Error::Rng`] if the nonce cannot be drawn; [`Error::Internal`] if encryption fails.
pub fn seal(
    key: &KeyringKey,
    binding: &Binding<'_>,
    secret: &WalletSecret,
) -> Result<Vec<u8>, Error> {
    frame::seal(
        key.expose_secret(),
        RECORD_VERSION,
        secret.expose_secret(),
        &binding.associated_data(RECORD_DOMAIN),
    )
}

/// Seals an HD root (master secret ‖ chain code) under a keyring key. `binding.public_key` is
/// the master public key.
///
/// # Errors
/// As [`seal`].
pub fn seal_root(key: &KeyringKey, binding: &Binding<'_>, root: &HdRoot) -> Result<Vec<u8>, Error> {
    let mut plaintext = Zeroizing::new([0u8; 2 * SECRET_LEN]);
    plaintext[..SECRET_LEN].copy_from_slice(root.secret().expose_secret());
    plaintext[SECRET_LEN..].copy_from_slice(root.chain_code().expose_secret());
    frame::seal(
        key.expose_secret(),
        ROOT_RECORD_VERSION,
        plaintext.as_slice(),
        &binding.associated_data(ROOT_RECORD_DOMAIN),
    )
}

/// What a sealed record holds.
#[derive(Debug)]
pub enum Opened {
    /// A single secret (version 1).
    Key(WalletSecret),
    /// An HD root (version 2).
    Root(HdRoot),
}

/// Opens a sealed record of either kind, by its version byte.
///
/// # Errors
/// [`Error::SealCheckFailed`] for every failure.
pub fn open_any(key: &KeyringKey, binding: &Binding<'_>, record: &[u8]) -> Result<Opened, Error> {
    match record.first() {
        Some(&RECORD_VERSION) => open(key, binding, record).map(Opened::Key),
        Some(&ROOT_RECORD_VERSION) => {
            let plaintext = frame::open::<{ 2 * SECRET_LEN }>(
                key.expose_secret(),
                ROOT_RECORD_VERSION,
                record,
                &binding.associated_data(ROOT_RECORD_DOMAIN),
            )?;
            let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
            let mut chain = Zeroizing::new([0u8; SECRET_LEN]);
            secret.copy_from_slice(&plaintext[..SECRET_LEN]);
            chain.copy_from_slice(&plaintext[SECRET_LEN..]);
            Ok(Opened::Root(HdRoot::from_parts(
                WalletSecret::from_bytes(&secret),
                ChainCode::from_bytes(&chain),
            )))
        }
        _ => Err(Error::SealCheckFailed),
    }
}

/// Opens a sealed record. Any mismatch of format, key or binding is the same opaque error.
///
/// # Errors
/// [`Error::SealCheckFailed`] for every failure.
pub fn open(key: &KeyringKey, binding: &Binding<'_>, record: &[u8]) -> Result<WalletSecret, Error> {
    let secret = frame::open::<SECRET_LEN>(
        key.expose_secret(),
        RECORD_VERSION,
        record,
        &binding.associated_data(RECORD_DOMAIN),
    )?;
    Ok(WalletSecret::from_bytes(&secret))
}

fn admins_aad(keyring_id: &KeyringId, admins_hash: &[u8; 32]) -> Vec<u8> {
    let mut aad = ADMINS_SEAL_DOMAIN.to_vec();
    aad.extend_from_slice(keyring_id.to_string().as_bytes());
    aad.extend_from_slice(admins_hash);
    aad
}

/// Binds a keyring's admin set to its key: AES-256-GCM of nothing, with the keyring id and the
/// admin set's hash as associated data. Only the enclave holding the keyring key can make one.
///
/// # Errors
/// [`Error::Rng`]; [`Error::Internal`].
pub fn seal_admins(
    key: &KeyringKey,
    keyring_id: &KeyringId,
    admins_hash: &[u8; 32],
) -> Result<Vec<u8>, Error> {
    frame::seal(
        key.expose_secret(),
        RECORD_VERSION,
        &[],
        &admins_aad(keyring_id, admins_hash),
    )
}

/// Checks a keyring's admin seal.
///
/// # Errors
/// [`Error::SealCheckFailed`] for every failure.
pub fn open_admins(
    key: &KeyringKey,
    keyring_id: &KeyringId,
    admins_hash: &[u8; 32],
    seal: &[u8],
) -> Result<(), Error> {
    frame::open::<0>(
        key.expose_secret(),
        RECORD_VERSION,
        seal,
        &admins_aad(keyring_id, admins_hash),
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        key: KeyringKey,
        key_id: KeyId,
        keyring_id: KeyringId,
        public_key: [u8; 33],
        policy_hash: [u8; 32],
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                key: KeyringKey::random().unwrap(),
                key_id: KeyId::random().unwrap(),
                keyring_id: KeyringId::random().unwrap(),
                public_key: [2; 33],
                policy_hash: policy_hash(b""),
            }
        }

        fn binding(&self) -> Binding<'_> {
            Binding {
                key_id: &self.key_id,
                keyring_id: &self.keyring_id,
                public_key: &self.public_key,
                policy_hash: &self.policy_hash,
            }
        }
    }

    #[test]
    fn round_trip() {
        let f = Fixture::new();
        let secret = WalletSecret::random().unwrap();
        let record = seal(&f.key, &f.binding(), &secret).unwrap();
        assert_eq!(record.len(), RECORD_LEN);
        assert!(open(&f.key, &f.binding(), &record).unwrap().ct_eq(&secret));
    }

    #[test]
    fn every_binding_field_and_byte_matters() {
        let f = Fixture::new();
        let record = seal(&f.key, &f.binding(), &WalletSecret::random().unwrap()).unwrap();
        let other_key = KeyId::random().unwrap();
        let other_ring = KeyringId::random().unwrap();
        let other_pub = [3; 33];
        let other_policy = policy_hash(b"x");
        let b = f.binding();
        for binding in [
            Binding {
                key_id: &other_key,
                ..f.binding()
            },
            Binding {
                keyring_id: &other_ring,
                ..f.binding()
            },
            Binding {
                public_key: &other_pub,
                ..f.binding()
            },
            Binding {
                policy_hash: &other_policy,
                ..f.binding()
            },
        ] {
            assert!(matches!(
                open(&f.key, &binding, &record),
                Err(Error::SealCheckFailed)
            ));
        }
        for i in 0..record.len() {
            let mut tampered = record.clone();
            tampered[i] ^= 1;
            assert!(
                matches!(open(&f.key, &b, &tampered), Err(Error::SealCheckFailed)),
                "byte {i}"
            );
        }
        assert!(open(&f.key, &b, &record[..RECORD_LEN - 1]).is_err());
        assert!(open(&KeyringKey::random().unwrap(), &b, &record).is_err());
    }

    #[test]
    fn roots_round_trip_and_do_not_open_as_the_other_kind() {
        let f = Fixture::new();
        let root = HdRoot::random().unwrap();
        let record = seal_root(&f.key, &f.binding(), &root).unwrap();
        assert_eq!(record.len(), ROOT_RECORD_LEN);
        let Opened::Root(opened) = open_any(&f.key, &f.binding(), &record).unwrap() else {
            panic!("a root record opens as a root");
        };
        assert!(opened.secret().ct_eq(root.secret()));
        assert!(opened.chain_code().ct_eq(root.chain_code()));
        // Relabelled as the other kind (version byte), or opened by the single-key opener, the
        // record fails: the kinds are domain-separated, not only told apart by length.
        let mut relabelled = record.clone();
        relabelled[0] = RECORD_VERSION;
        assert!(open_any(&f.key, &f.binding(), &relabelled).is_err());
        assert!(open(&f.key, &f.binding(), &record).is_err());
        for i in 0..record.len() {
            let mut tampered = record.clone();
            tampered[i] ^= 1;
            assert!(
                open_any(&f.key, &f.binding(), &tampered).is_err(),
                "byte {i}"
            );
        }
        let single = seal(&f.key, &f.binding(), &WalletSecret::random().unwrap()).unwrap();
        assert!(matches!(
            open_any(&f.key, &f.binding(), &single).unwrap(),
            Opened::Key(_)
        ));
        let mut as_root = single;
        as_root[0] = ROOT_RECORD_VERSION;
        assert!(open_any(&f.key, &f.binding(), &as_root).is_err());
        assert!(open_any(&f.key, &f.binding(), &[]).is_err());
    }

    #[test]
    fn policy_hash_is_domain_separated_sha256() {
        // SHA-256("signer.v1 policy\0"), computed independently with `printf 'signer.v1 policy\0' | sha256sum`.
        assert_eq!(
            hex::encode(policy_hash(b"")),
            include_str!("../testdata/empty_policy_hash.txt").trim()
        );
    }

    #[test]
    fn admin_seal_binds_keyring_and_admin_set() {
        let f = Fixture::new();
        let hash = [9u8; 32];
        let seal = seal_admins(&f.key, &f.keyring_id, &hash).unwrap();
        assert_eq!(seal.len(), ADMINS_SEAL_LEN);
        open_admins(&f.key, &f.keyring_id, &hash, &seal).unwrap();
        assert!(open_admins(&f.key, &f.keyring_id, &[8; 32], &seal).is_err());
        let other_ring = KeyringId::random().unwrap();
        assert!(open_admins(&f.key, &other_ring, &hash, &seal).is_err());
        assert!(open_admins(&KeyringKey::random().unwrap(), &f.keyring_id, &hash, &seal).is_err());
        for i in 0..seal.len() {
            let mut tampered = seal.clone();
            tampered[i] ^= 1;
            assert!(open_admins(&f.key, &f.keyring_id, &hash, &tampered).is_err());
        }
    }
}
