//! The `Recipient` side of KMS calls made for an attested enclave: an ephemeral RSA-2048 key whose
//! public half goes into the attestation document, and the opening of the CMS EnvelopedData that
//! KMS returns as `CiphertextForRecipient`.
//!
//! KMS's format (observed, see the fixtures' PROVENANCE.md): BER with indefinite lengths,
//! EnvelopedData version 2, one KeyTransRecipientInfo whose subjectKeyIdentifier is the SHA-256 of
//! the recipient's SubjectPublicKeyInfo, RSAES-OAEP with SHA-256 and MGF1-SHA-256 wrapping a
//! 256-bit content key, and AES-256-CBC content with PKCS#7 padding. Anything else is refused.

use aes::cipher::{BlockModeDecrypt as _, KeyIvInit as _};
use cms::content_info::ContentInfo;
use cms::enveloped_data::{EnvelopedData, RecipientIdentifier, RecipientInfo};
use der::asn1::ObjectIdentifier;
use der::{Decode as _, Encode as _};
use rsa::pkcs8::EncodePublicKey as _;
use rsa::{Oaep, RsaPrivateKey};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::Error;

const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
const ID_AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");
/// RSAES-OAEP-params { hashAlgorithm sha256, maskGenAlgorithm mgf1(sha256) }, as KMS encodes them.
const OAEP_SHA256_PARAMS: &[u8] = &[
    0x30, 0x2f, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
    0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
    0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00,
];
/// Largest `CiphertextForRecipient` accepted (a data key's is about 600 bytes).
pub const MAX_CIPHERTEXT_FOR_RECIPIENT: usize = 64 * 1024;

fn refused(why: &'static str) -> Error {
    Error::Provider(why)
}

/// An ephemeral RSA-2048 key made for one KMS call. The key wipes itself on drop.
pub struct Recipient {
    key: RsaPrivateKey,
    spki_der: Vec<u8>,
}

impl core::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Recipient").finish_non_exhaustive()
    }
}

impl Recipient {
    /// A fresh RSA-2048 key from the OS RNG.
    ///
    /// # Errors
    /// [`Error::Internal`] if key generation fails.
    pub fn generate() -> Result<Self, Error> {
        let mut rng = rand_core::UnwrapErr(getrandom_sys_rng::SysRng);
        Self::from_key(RsaPrivateKey::new(&mut rng, 2048).map_err(|_| Error::Internal)?)
    }

    /// Wraps an existing key (tests open recorded KMS output with its recorded key).
    ///
    /// # Errors
    /// [`Error::Internal`] if the public key cannot be encoded.
    pub fn from_key(key: RsaPrivateKey) -> Result<Self, Error> {
        let spki_der = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|_| Error::Internal)?
            .into_vec();
        Ok(Self { key, spki_der })
    }

    /// The SubjectPublicKeyInfo DER: what goes into the attestation document's `public_key`.
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Opens a `CiphertextForRecipient` addressed to this key and returns the plaintext. Takes
    /// the key: it decrypts once. The host relays KMS's answer and could replace it, so every
    /// decryption is a chosen-ciphertext query it can time; one query per fresh key leaves
    /// nothing to learn across queries — which is why RSA's decryption timing (RUSTSEC-2023-0071,
    /// the Marvin attack: many timed queries against one key) is accepted in `deny.toml`.
    ///
    /// # Errors
    /// [`Error::Provider`] naming the first structural check that failed, or that decryption
    /// failed (one message for every cryptographic failure).
    pub fn open(self, ber: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if ber.len() > MAX_CIPHERTEXT_FOR_RECIPIENT {
            return Err(refused("CiphertextForRecipient too large"));
        }
        let info =
            ContentInfo::from_ber(ber).map_err(|_| refused("CiphertextForRecipient is not CMS"))?;
        if info.content_type != ID_ENVELOPED_DATA {
            return Err(refused("CiphertextForRecipient is not EnvelopedData"));
        }
        let content = info
            .content
            .to_der()
            .map_err(|_| refused("CiphertextForRecipient is not CMS"))?;
        let enveloped =
            EnvelopedData::from_ber(&content).map_err(|_| refused("malformed EnvelopedData"))?;
        let [RecipientInfo::Ktri(ktri)] = enveloped.recip_infos.0.as_slice() else {
            return Err(refused(
                "EnvelopedData must have exactly one key-transport recipient",
            ));
        };
        let RecipientIdentifier::SubjectKeyIdentifier(ski) = &ktri.rid else {
            return Err(refused(
                "recipient is not identified by subject key identifier",
            ));
        };
        if ski.0.as_bytes() != Sha256::digest(&self.spki_der).as_slice() {
            return Err(refused(
                "CiphertextForRecipient is addressed to another key",
            ));
        }
        let params = ktri
            .key_enc_alg
            .parameters
            .as_ref()
            .and_then(|p| p.to_der().ok());
        if ktri.key_enc_alg.oid != ID_RSAES_OAEP || params.as_deref() != Some(OAEP_SHA256_PARAMS) {
            return Err(refused("key encryption is not RSAES-OAEP with SHA-256"));
        }
        let content_key = Zeroizing::new(
            self.key
                .decrypt(Oaep::<Sha256>::new(), ktri.enc_key.as_bytes())
                .map_err(|_| refused("decryption failed"))?,
        );
        let content_key: &[u8; 32] = content_key
            .as_slice()
            .try_into()
            .map_err(|_| refused("decryption failed"))?;

        let encrypted = &enveloped.encrypted_content;
        if encrypted.content_type != ID_DATA || encrypted.content_enc_alg.oid != ID_AES256_CBC {
            return Err(refused("content is not AES-256-CBC data"));
        }
        let iv = encrypted
            .content_enc_alg
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<der::asn1::OctetString>().ok())
            .and_then(|o| <[u8; 16]>::try_from(o.as_bytes()).ok())
            .ok_or(refused("AES-256-CBC without a 16-byte IV"))?;
        let ciphertext = encrypted
            .encrypted_content
            .as_ref()
            .ok_or(refused("EnvelopedData without content"))?;
        let plaintext = cbc::Decryptor::<aes::Aes256>::new(content_key.into(), &iv.into())
            .decrypt_padded_vec::<aes::cipher::block_padding::Pkcs7>(ciphertext.as_bytes())
            .map_err(|_| refused("decryption failed"))?;
        Ok(Zeroizing::new(plaintext))
    }
}

#[cfg(test)]
mod tests {
    use rsa::pkcs8::DecodePrivateKey as _;

    use super::*;

    const DIR: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/fixtures/kms-ciphertext-for-recipient/"
    );

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{DIR}{name}")).unwrap()
    }

    fn enclaver_recipient() -> Recipient {
        let key = RsaPrivateKey::from_pkcs8_der(&fixture("enclaver_recipient_rsa2048_pkcs8.der"))
            .unwrap();
        Recipient::from_key(key).unwrap()
    }

    #[test]
    fn opens_the_recorded_sample_to_its_plaintext() {
        let recipient = enclaver_recipient();
        // The recorded rid is SHA-256 of this key's SubjectPublicKeyInfo.
        assert_eq!(
            hex::encode(Sha256::digest(recipient.public_key_der())),
            "fb09e9af2940ddcf0d2bbf6358c983af46fc5fdcedbca251d54ceab4d069cd89"
        );
        let plaintext = recipient
            .open(&fixture("enclaver_hello_world.ber"))
            .unwrap();
        assert_eq!(
            plaintext.as_slice(),
            fixture("enclaver_hello_world.plaintext").as_slice()
        );
    }

    #[test]
    fn parses_the_aws_samples_and_refuses_them_as_addressed_elsewhere() {
        for n in 1..=4 {
            let sample = fixture(&format!("rustcrypto_kms_ciphertext_for_recipient_{n}.ber"));
            // They parse all the way to the recipient check: KMS's BER, chunked content and all.
            assert!(
                matches!(
                    enclaver_recipient().open(&sample),
                    Err(Error::Provider(
                        "CiphertextForRecipient is addressed to another key"
                    ))
                ),
                "sample {n}"
            );
        }
    }

    #[test]
    fn refuses_a_tampered_key_and_garbage() {
        let sample = fixture("enclaver_hello_world.ber");
        let info = ContentInfo::from_ber(&sample).unwrap();
        let enveloped = EnvelopedData::from_ber(&info.content.to_der().unwrap()).unwrap();
        let [RecipientInfo::Ktri(ktri)] = enveloped.recip_infos.0.as_slice() else {
            panic!()
        };
        let wrapped = ktri.enc_key.as_bytes();
        let start = sample
            .windows(wrapped.len())
            .position(|w| w == wrapped)
            .unwrap();
        // OAEP authenticates the wrapped content key: any flipped bit in it is refused.
        for i in start..start + wrapped.len() {
            let mut tampered = sample.clone();
            tampered[i] ^= 0x01;
            assert!(
                matches!(
                    enclaver_recipient().open(&tampered),
                    Err(Error::Provider("decryption failed"))
                ),
                "byte {i}"
            );
        }
        // Every other flip is refused or decrypts; none panics.
        for i in 0..sample.len() {
            let mut tampered = sample.clone();
            tampered[i] ^= 0x80;
            let _ = enclaver_recipient().open(&tampered);
        }
        assert!(enclaver_recipient().open(b"").is_err());
        assert!(
            enclaver_recipient()
                .open(&vec![0u8; MAX_CIPHERTEXT_FOR_RECIPIENT + 1])
                .is_err()
        );
    }

    /// KMS's content encryption is AES-CBC without a MAC: the IV can be flipped to flip plaintext
    /// bits. Integrity comes from TLS (which ends inside the enclave) and, for keyring keys, from
    /// the AEAD seals the key must open. This test pins that property down so nobody relies on CMS
    /// for integrity.
    #[test]
    fn content_encryption_is_malleable_by_design_of_the_format() {
        let recipient = enclaver_recipient();
        let sample = fixture("enclaver_hello_world.ber");
        let iv_param = hex::decode("04102c2ff1116ae6f8573fd58fd44f980624").unwrap();
        let iv_at = sample
            .windows(iv_param.len())
            .position(|w| w == iv_param)
            .unwrap()
            + 2;
        let mut tampered = sample.clone();
        tampered[iv_at] ^= 0x01;
        assert_eq!(
            recipient.open(&tampered).unwrap().as_slice(),
            b"Iello, World"
        );
    }

    #[test]
    fn another_key_cannot_open_it() {
        let other = Recipient::generate().unwrap();
        assert_eq!(other.public_key_der().len(), 294);
        assert!(matches!(
            other.open(&fixture("enclaver_hello_world.ber")),
            Err(Error::Provider(
                "CiphertextForRecipient is addressed to another key"
            ))
        ));
    }
}
