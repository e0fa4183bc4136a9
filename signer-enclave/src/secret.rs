//! Secret byte types (32 bytes each): redacted `Debug`, no `Display`/`Clone`/`PartialEq`, wiped on drop.

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of every secret this crate handles: secp256k1 scalars and AES-256 keys.
pub const SECRET_LEN: usize = 32;

macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; SECRET_LEN]);

        impl $name {
            /// Wraps bytes the caller already holds. The caller's copy should be a `Zeroizing`.
            pub fn from_bytes(bytes: &[u8; SECRET_LEN]) -> Self {
                Self(*bytes)
            }

            /// Fills a new value from the operating system's RNG (the NSM hwrng inside Nitro).
            ///
            /// # Errors
            /// Fails only if the OS RNG fails.
            pub fn random() -> Result<Self, getrandom::Error> {
                let mut value = Self([0; SECRET_LEN]);
                getrandom::fill(&mut value.0)?;
                Ok(value)
            }

            /// The secret bytes. Every exposure is greppable by this name.
            pub fn expose_secret(&self) -> &[u8; SECRET_LEN] {
                &self.0
            }

            /// Constant-time equality.
            pub fn ct_eq(&self, other: &Self) -> bool {
                self.0.ct_eq(&other.0).into()
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(concat!(stringify!($name), "([REDACTED])"))
            }
        }
    };
}

secret_type!(
    /// A wallet secret key: a secp256k1 scalar, 32 bytes big-endian.
    WalletSecret
);

secret_type!(
    /// A BIP-32 chain code: public in an extended public key, but with one non-hardened child's
    /// secret it yields the parent's, so the enclave keeps its roots' chain codes as secrets.
    ChainCode
);

secret_type!(
    /// A keyring key: the AES-256-GCM key that seals a keyring's wallet records.
    KeyringKey
);

secret_type!(
    /// The local provider's master key (development stand-in for KMS).
    MasterKey
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let secret = WalletSecret::from_bytes(&[0xab; SECRET_LEN]);
        let printed = format!("{secret:?}");
        assert_eq!(printed, "WalletSecret([REDACTED])");
        assert!(!printed.to_lowercase().contains("ab, "));
    }

    #[test]
    fn random_values_differ_and_compare_in_constant_time() {
        let a = KeyringKey::random().unwrap();
        let b = KeyringKey::random().unwrap();
        assert!(!a.ct_eq(&b));
        assert!(a.ct_eq(&KeyringKey::from_bytes(a.expose_secret())));
    }

    #[test]
    fn zeroize_wipes() {
        let mut key = MasterKey::from_bytes(&[7; SECRET_LEN]);
        key.zeroize();
        assert_eq!(key.expose_secret(), &[0; SECRET_LEN]);
    }
}
