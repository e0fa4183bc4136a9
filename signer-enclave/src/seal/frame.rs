//! The one framing of every AES-256-GCM blob the enclave makes (sealed records, keyring admin
//! seals, the local provider's wrapped keys): `version (1) ‖ nonce (12, OS RNG) ‖ ciphertext ‖
//! tag (16)`. Random 96-bit nonces bound the safe number of seals per key at 2^32. Opening
//! fails with one opaque error for every cause; plaintexts come back in wiping memory.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use zeroize::Zeroizing;

use crate::Error;

/// Version byte and nonce in front of the ciphertext.
pub const HEADER_LEN: usize = 1 + 12;
/// The GCM tag after it.
pub const TAG_LEN: usize = 16;

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

/// Seals `plaintext` under `key` with `aad`, framed with `version`.
///
/// # Errors
/// [`Error::Rng`] if the nonce cannot be drawn; [`Error::Internal`] if encryption fails.
pub fn seal(key: &[u8; 32], version: u8, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce)?;
    let ciphertext = cipher(key)
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::Internal)?;
    let mut frame = Vec::with_capacity(HEADER_LEN + ciphertext.len());
    frame.push(version);
    frame.extend_from_slice(&nonce);
    frame.extend_from_slice(&ciphertext);
    Ok(frame)
}

/// Opens a frame of `version` whose plaintext is `N` bytes.
///
/// # Errors
/// [`Error::SealCheckFailed`] for every failure: length, version, key, `aad` or any byte.
pub fn open<const N: usize>(
    key: &[u8; 32],
    version: u8,
    frame: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<[u8; N]>, Error> {
    if frame.len() != HEADER_LEN + N + TAG_LEN || frame[0] != version {
        return Err(Error::SealCheckFailed);
    }
    let nonce: [u8; 12] = frame[1..HEADER_LEN]
        .try_into()
        .map_err(|_| Error::SealCheckFailed)?;
    let plaintext = Zeroizing::new(
        cipher(key)
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: &frame[HEADER_LEN..],
                    aad,
                },
            )
            .map_err(|_| Error::SealCheckFailed)?,
    );
    let mut out = Zeroizing::new([0u8; N]);
    out.copy_from_slice(plaintext.get(..N).ok_or(Error::SealCheckFailed)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_byte_matters() {
        let key = [7u8; 32];
        let frame = seal(&key, 1, &[5; 32], b"aad").unwrap();
        assert_eq!(frame.len(), HEADER_LEN + 32 + TAG_LEN);
        assert_eq!(*open::<32>(&key, 1, &frame, b"aad").unwrap(), [5; 32]);
        assert!(open::<32>(&key, 2, &frame, b"aad").is_err(), "version");
        assert!(open::<32>(&key, 1, &frame, b"other").is_err(), "aad");
        assert!(open::<32>(&[8; 32], 1, &frame, b"aad").is_err(), "key");
        assert!(open::<31>(&key, 1, &frame, b"aad").is_err(), "length");
        for i in 0..frame.len() {
            let mut tampered = frame.clone();
            tampered[i] ^= 1;
            assert!(open::<32>(&key, 1, &tampered, b"aad").is_err(), "byte {i}");
        }
        // An empty plaintext is a bare tag: what the admin seals are.
        let tag_only = seal(&key, 1, &[], b"aad").unwrap();
        assert!(open::<0>(&key, 1, &tag_only, b"aad").is_ok());
    }
}
