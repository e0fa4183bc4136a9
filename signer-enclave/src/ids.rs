//! Key and keyring identifiers: 16 random bytes, written with a type prefix and lowercase hex.

use core::fmt;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 16]);

        impl $name {
            /// The textual prefix.
            pub const PREFIX: &'static str = $prefix;

            /// A new random id.
            ///
            /// # Errors
            /// Fails only if the OS RNG fails.
            pub fn random() -> Result<Self, getrandom::Error> {
                let mut bytes = [0u8; 16];
                getrandom::fill(&mut bytes)?;
                Ok(Self(bytes))
            }

            /// Parses the textual form: the prefix and exactly 32 lowercase hex digits.
            ///
            /// # Errors
            /// [`crate::Error::InvalidArgument`] for anything else.
            pub fn parse(text: &str) -> Result<Self, crate::Error> {
                let hex_part = text
                    .strip_prefix($prefix)
                    .filter(|h| h.len() == 32 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                    .ok_or(crate::Error::InvalidArgument(concat!("malformed ", stringify!($name))))?;
                let mut bytes = [0u8; 16];
                hex::decode_to_slice(hex_part, &mut bytes)
                    .map_err(|_| crate::Error::InvalidArgument(concat!("malformed ", stringify!($name))))?;
                Ok(Self(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Into a buffer on the stack: ids are formatted on every signing path.
                let mut digits = [0u8; 32];
                hex::encode_to_slice(self.0, &mut digits).map_err(|_| fmt::Error)?;
                f.write_str($prefix)?;
                f.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

id_type!(
    /// A wallet key's id, `k-` and 32 hex digits.
    KeyId,
    "k-"
);

id_type!(
    /// A keyring's id, `kr-` and 32 hex digits.
    KeyringId,
    "kr-"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let id = KeyId::random().unwrap();
        assert_eq!(KeyId::parse(&id.to_string()).unwrap(), id);
        for bad in [
            "",
            "k-",
            "k-00",
            "kr-00000000000000000000000000000000",
            "k-0000000000000000000000000000000G",
            "k-0000000000000000000000000000000A",
            "k-000000000000000000000000000000000",
        ] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
        let text = "kr-0123456789abcdef0123456789abcdef";
        assert_eq!(KeyringId::parse(text).unwrap().to_string(), text);
        assert_eq!(format!("{:?}", KeyringId::parse(text).unwrap()), text);
    }
}
