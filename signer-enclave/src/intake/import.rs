//! Key import: the `ImportKeyBody` validated (sizes bounded by what the material can be), and
//! the opened HPKE plaintext read as exactly the material the body names — a secp256k1
//! secret, a BIP-32 seed, or a BIP-39 mnemonic with its passphrase. Formats in `SPEC.md`.

use signer_proto::pb;
use signer_proto::pb::request_body::Operation;
use zeroize::Zeroizing;

use super::stamped::{CreateOp, WRONG_OPERATION, create_op};
use crate::Error;
use crate::hd::{HdRoot, HdSeed, MAX_MNEMONIC_BYTES, MAX_PASSPHRASE_BYTES};
use crate::secret::{SECRET_LEN, WalletSecret};

/// The AEAD tag HPKE's ChaCha20-Poly1305 appends.
const TAG_LEN: usize = 16;

/// A validated import request.
#[derive(Debug)]
pub(crate) struct ImportOp {
    /// Keyring, label, policy and the kind of key the material makes.
    pub create: CreateOp,
    /// What the ciphertext holds.
    pub material: pb::ImportMaterial,
    /// The HPKE key the client encrypted to.
    pub hpke_public_key: Vec<u8>,
    /// HPKE encapsulated key.
    pub encapsulated_key: Vec<u8>,
    /// HPKE ciphertext of the material.
    pub ciphertext: Vec<u8>,
}

/// What an import opened to, ready to seal. Both variants wipe on drop.
pub(crate) enum Imported {
    /// A single key's secret.
    Key(WalletSecret),
    /// An HD root, made from an imported seed or mnemonic (which is already wiped).
    Root(HdRoot),
}

impl ImportOp {
    /// The HPKE associated data this import must have been sealed with: the keyring, the
    /// canonical policy the key will get, the body's nonce and the material's form.
    pub(crate) fn aad(&self, nonce: &[u8]) -> Vec<u8> {
        signer_proto::canonical::import_aad(
            &self.create.keyring_id.to_string(),
            &self.create.policy.encode(),
            nonce,
            u8::try_from(i32::from(self.material)).unwrap_or(u8::MAX),
        )
    }

    /// Reads an opened plaintext as the material the body names.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a plaintext that is not a valid instance of it.
    pub(crate) fn read(&self, plaintext: &[u8]) -> Result<Imported, Error> {
        read(self.material, plaintext)
    }
}

/// Reads an opened plaintext as `material`.
///
/// # Errors
/// [`Error::InvalidArgument`] for a plaintext that is not a valid instance of it.
pub(crate) fn read(material: pb::ImportMaterial, plaintext: &[u8]) -> Result<Imported, Error> {
    match material {
        pb::ImportMaterial::Secret => {
            let bytes: &[u8; SECRET_LEN] = plaintext
                .try_into()
                .map_err(|_| Error::InvalidArgument("imported secret is not 32 bytes"))?;
            Ok(Imported::Key(WalletSecret::from_bytes(bytes)))
        }
        pb::ImportMaterial::Seed => Ok(Imported::Root(HdSeed::from_bytes(plaintext)?.root()?)),
        pb::ImportMaterial::Mnemonic => {
            const MALFORMED: Error = Error::InvalidArgument("imported mnemonic is malformed");
            let (length, rest) = plaintext.split_at_checked(2).ok_or(MALFORMED)?;
            let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
            let (phrase, passphrase) = rest.split_at_checked(length).ok_or(MALFORMED)?;
            let phrase = Zeroizing::new(
                std::str::from_utf8(phrase)
                    .map_err(|_| MALFORMED)?
                    .to_owned(),
            );
            let passphrase = Zeroizing::new(
                std::str::from_utf8(passphrase)
                    .map_err(|_| MALFORMED)?
                    .to_owned(),
            );
            Ok(Imported::Root(
                HdSeed::from_mnemonic(&phrase, &passphrase)?.root()?,
            ))
        }
    }
}

/// Validates an `ImportKeyBody`: the ciphertext's size must fit its material, and the kind of
/// key follows from the material (a secret makes a single key; a seed or mnemonic, a root).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first problem found.
pub(crate) fn import_key_op(operation: Operation) -> Result<ImportOp, Error> {
    let Operation::ImportKey(body) = operation else {
        return Err(WRONG_OPERATION);
    };
    let material = pb::ImportMaterial::try_from(body.material)
        .map_err(|_| Error::InvalidArgument("unknown import material"))?;
    let (sizes, kind) = match material {
        pb::ImportMaterial::Secret => (SECRET_LEN..=SECRET_LEN, pb::KeyKind::Secp256k1),
        pb::ImportMaterial::Seed => (16..=64, pb::KeyKind::HdRoot),
        pb::ImportMaterial::Mnemonic => (
            2..=2 + MAX_MNEMONIC_BYTES + MAX_PASSPHRASE_BYTES,
            pb::KeyKind::HdRoot,
        ),
    };
    let plaintext_len = body.ciphertext.len().checked_sub(TAG_LEN);
    if body.encapsulated_key.len() != 32 || !plaintext_len.is_some_and(|len| sizes.contains(&len)) {
        return Err(Error::InvalidArgument(
            "import ciphertext has the wrong size",
        ));
    }
    Ok(ImportOp {
        create: create_op(
            &body.keyring_id,
            body.label,
            body.policy.as_ref(),
            kind.into(),
        )?,
        material,
        hpke_public_key: body.hpke_public_key,
        encapsulated_key: body.encapsulated_key,
        ciphertext: body.ciphertext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::KeyringId;

    fn op(material: pb::ImportMaterial) -> ImportOp {
        ImportOp {
            create: CreateOp {
                keyring_id: KeyringId::parse("kr-00000000000000000000000000000000").unwrap(),
                label: String::new(),
                policy: crate::testing::policy(2),
                kind: pb::KeyKind::HdRoot,
            },
            material,
            hpke_public_key: Vec::new(),
            encapsulated_key: Vec::new(),
            ciphertext: Vec::new(),
        }
    }

    fn mnemonic(phrase: &str, passphrase: &str) -> Vec<u8> {
        let mut plaintext = u16::try_from(phrase.len()).unwrap().to_be_bytes().to_vec();
        plaintext.extend_from_slice(phrase.as_bytes());
        plaintext.extend_from_slice(passphrase.as_bytes());
        plaintext
    }

    const ABANDON: &str = "abandon abandon abandon abandon abandon abandon abandon abandon \
                           abandon abandon abandon about";

    #[test]
    fn each_material_reads_only_as_itself() {
        // BIP-39's first vector with the passphrase TREZOR: the seed, and the root it makes.
        let seed = hex::decode(
            "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04",
        )
        .unwrap();
        let Imported::Root(from_seed) = op(pb::ImportMaterial::Seed).read(&seed).unwrap() else {
            panic!("a seed makes a root");
        };
        let Imported::Root(from_phrase) = op(pb::ImportMaterial::Mnemonic)
            .read(&mnemonic(ABANDON, "TREZOR"))
            .unwrap()
        else {
            panic!("a mnemonic makes a root");
        };
        assert_eq!(
            from_seed.fingerprint().unwrap(),
            from_phrase.fingerprint().unwrap()
        );
        // Without the passphrase: another root.
        let Imported::Root(bare) = op(pb::ImportMaterial::Mnemonic)
            .read(&mnemonic(ABANDON, ""))
            .unwrap()
        else {
            panic!("a mnemonic makes a root");
        };
        assert_ne!(
            bare.fingerprint().unwrap(),
            from_seed.fingerprint().unwrap()
        );
        assert!(matches!(
            op(pb::ImportMaterial::Secret).read(&[7; 32]),
            Ok(Imported::Key(_))
        ));
    }

    #[test]
    fn malformed_plaintexts_are_refused() {
        let secret = op(pb::ImportMaterial::Secret);
        let seed = op(pb::ImportMaterial::Seed);
        let phrase = op(pb::ImportMaterial::Mnemonic);
        for bad in [&[7u8; 31][..], &[7; 33], &[]] {
            assert!(secret.read(bad).is_err());
        }
        for bad in [&[7u8; 15][..], &[7; 20], &[7; 65]] {
            assert!(seed.read(bad).is_err());
        }
        let mut overlong = mnemonic(ABANDON, "");
        overlong[1] += 1;
        for bad in [
            vec![],
            vec![0],
            overlong,
            mnemonic("abandon abandon abandon", ""),
            mnemonic(&ABANDON.replace("about", "abandon"), ""),
            [&[0, 2][..], &[0xff, 0xfe]].concat(),
        ] {
            assert!(phrase.read(&bad).is_err(), "{bad:?}");
        }
    }
}
