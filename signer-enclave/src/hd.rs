//! HD wallets: an HD root's seed (BIP-32, or BIP-39 from a mnemonic), derivation paths with
//! limits, the signing secret at a path, and extended public keys at a path. Derivation is the
//! `bip32` crate's (RustCrypto, over k256) and mnemonics are the `bip39` crate's (rust-bitcoin);
//! only the limits and the secret handling are this crate's.
//!
//! A root's sealed record holds its master extended private key ([`HdRoot`]: the BIP-32 master
//! secret and chain code, computed from the seed once). Derived secrets are never stored: they
//! are derived here when used and returned as a [`WalletSecret`], which wipes on drop.
//! `bip32`'s intermediate keys wipe their scalar on drop but not their chain code; they live
//! only for the duration of one derivation.

use bip32::{ChildNumber, ExtendedKey, ExtendedKeyAttrs, Prefix, XPrv};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::Error;
use crate::secret::{ChainCode, SECRET_LEN, WalletSecret};

/// Deepest path accepted: BIP-32 serialises depth in one byte.
pub const MAX_DEPTH: usize = 255;
/// The hardened bit of a child index (BIP-32: indices from 2^31 are hardened).
pub const HARDENED: u32 = 1 << 31;
/// Bytes drawn from the OS RNG for a root created in the enclave (256 bits).
pub const RANDOM_SEED_LEN: usize = 32;
/// Longest BIP-32 seed (and the length of every BIP-39 seed).
const MAX_SEED_LEN: usize = 64;
/// Longest mnemonic accepted, in bytes (24 English words are at most 215), checked before
/// Unicode normalisation.
pub const MAX_MNEMONIC_BYTES: usize = 1024;
/// Longest BIP-39 passphrase accepted, in bytes.
pub const MAX_PASSPHRASE_BYTES: usize = 1024;

/// A root's seed: 16, 32 or 64 bytes (the lengths BIP-32's reference vectors and the `bip32`
/// crate use; a BIP-39 seed is 64). Redacted `Debug`, no `Clone`, wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct HdSeed {
    bytes: [u8; MAX_SEED_LEN],
    len: usize,
}

impl core::fmt::Debug for HdSeed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HdSeed([REDACTED])")
    }
}

impl HdSeed {
    /// A new root's seed from the OS RNG (the NSM hwrng inside Nitro).
    ///
    /// # Errors
    /// [`Error::Rng`] if the OS RNG fails.
    pub fn random() -> Result<Self, Error> {
        let mut seed = Self {
            bytes: [0; MAX_SEED_LEN],
            len: RANDOM_SEED_LEN,
        };
        getrandom::fill(&mut seed.bytes[..RANDOM_SEED_LEN])?;
        Ok(seed)
    }

    /// Wraps a seed the caller holds (an imported one, or one opened from a sealed record).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a length other than 16, 32 or 64 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if ![16, 32, 64].contains(&bytes.len()) {
            return Err(Error::InvalidArgument("seed must be 16, 32 or 64 bytes"));
        }
        let mut seed = Self {
            bytes: [0; MAX_SEED_LEN],
            len: bytes.len(),
        };
        seed.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(seed)
    }

    /// The BIP-39 seed of an English mnemonic (12 to 24 words, checksum checked, NFKD
    /// normalised) and an optional passphrase (empty for none).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown word, a wrong word count, a bad checksum, or a
    /// phrase or passphrase longer than [`MAX_MNEMONIC_BYTES`] / [`MAX_PASSPHRASE_BYTES`].
    pub fn from_mnemonic(phrase: &str, passphrase: &str) -> Result<Self, Error> {
        if phrase.len() > MAX_MNEMONIC_BYTES || passphrase.len() > MAX_PASSPHRASE_BYTES {
            return Err(Error::InvalidArgument("mnemonic or passphrase too long"));
        }
        let mnemonic = bip39::Mnemonic::parse_in(bip39::Language::English, phrase)
            .map_err(|_| Error::InvalidArgument("mnemonic is not a valid English BIP-39 phrase"))?;
        let seed = Zeroizing::new(mnemonic.to_seed(passphrase));
        Self::from_bytes(seed.as_slice())
    }

    /// The seed bytes. Every exposure is greppable by this name.
    pub fn expose_secret(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The root this seed makes (BIP-32 master key generation).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the seed derives no valid key (probability below 2^-127).
    pub fn root(&self) -> Result<HdRoot, Error> {
        let master = XPrv::new(self.expose_secret())
            .map_err(|_| Error::InvalidArgument("seed derives no valid root key"))?;
        Ok(HdRoot::from_xprv(&master))
    }
}

/// An HD root's master extended private key: the BIP-32 master secret and chain code. What a
/// root's sealed record holds. Redacted `Debug`, no `Clone`, wiped on drop.
pub struct HdRoot {
    secret: WalletSecret,
    chain_code: ChainCode,
}

impl core::fmt::Debug for HdRoot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HdRoot([REDACTED])")
    }
}

impl HdRoot {
    /// A new root from a fresh seed from the OS RNG.
    ///
    /// # Errors
    /// [`Error::Rng`]; [`Error::InvalidArgument`] as [`HdSeed::root`].
    pub fn random() -> Result<Self, Error> {
        HdSeed::random()?.root()
    }

    /// A root from its master secret and chain code (as opened from a sealed record).
    pub fn from_parts(secret: WalletSecret, chain_code: ChainCode) -> Self {
        Self { secret, chain_code }
    }

    fn from_xprv(master: &XPrv) -> Self {
        let mut scalar = master.private_key().to_bytes();
        let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
        bytes.copy_from_slice(&scalar);
        scalar.as_mut_slice().zeroize();
        Self {
            secret: WalletSecret::from_bytes(&bytes),
            chain_code: ChainCode::from_bytes(&master.attrs().chain_code),
        }
    }

    /// The master secret (the key at `m`).
    pub fn secret(&self) -> &WalletSecret {
        &self.secret
    }

    /// The master chain code.
    pub fn chain_code(&self) -> &ChainCode {
        &self.chain_code
    }

    /// The root's fingerprint: the first 4 bytes of HASH160 of its public key (BIP-32), which
    /// PSBTs use to name the root a derivation starts from.
    ///
    /// # Errors
    /// As [`HdRoot::derive`].
    pub fn fingerprint(&self) -> Result<[u8; 4], Error> {
        Ok(self.master()?.public_key().fingerprint())
    }

    /// The signing secret at `path`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the path derives no valid key (probability below 2^-127 per
    /// step; BIP-32 says to move to the next index, which is the caller's choice, not ours).
    pub fn derive(&self, path: &HdPath) -> Result<WalletSecret, Error> {
        Ok(Self::from_xprv(&self.extended(path)?).secret)
    }

    /// The extended public key at `path`, serialised with `version` (Base58Check, BIP-32).
    ///
    /// # Errors
    /// As [`HdRoot::derive`].
    pub fn xpub(&self, path: &HdPath, version: XpubVersion) -> Result<String, Error> {
        Ok(self
            .extended(path)?
            .public_key()
            .to_string(version.prefix()))
    }

    /// The public key (SEC1 uncompressed) and the extended public key at `path`, from one
    /// derivation: what exporting a key under the root needs.
    ///
    /// # Errors
    /// As [`HdRoot::derive`].
    pub fn public_at(
        &self,
        path: &HdPath,
        version: XpubVersion,
    ) -> Result<(crate::backend::PublicKey, String), Error> {
        let public = self.extended(path)?.public_key();
        let point = public.public_key().to_sec1_point(false);
        let uncompressed: [u8; 65] = point.as_bytes().try_into().map_err(|_| Error::Internal)?;
        Ok((
            crate::backend::PublicKey(uncompressed),
            public.to_string(version.prefix()),
        ))
    }

    fn master(&self) -> Result<XPrv, Error> {
        let mut key_bytes = [0u8; SECRET_LEN + 1];
        key_bytes[1..].copy_from_slice(self.secret.expose_secret());
        // `ExtendedKey` wipes `key_bytes` on drop; the conversion copies the scalar into a
        // `k256` key, which wipes itself.
        let extended = ExtendedKey {
            prefix: Prefix::XPRV,
            attrs: ExtendedKeyAttrs {
                depth: 0,
                parent_fingerprint: [0; 4],
                child_number: ChildNumber(0),
                chain_code: *self.chain_code.expose_secret(),
            },
            key_bytes,
        };
        key_bytes.zeroize();
        XPrv::try_from(extended).map_err(|_| Error::InvalidArgument("root holds an invalid key"))
    }

    fn extended(&self, path: &HdPath) -> Result<XPrv, Error> {
        path.children
            .iter()
            .try_fold(self.master()?, |key, &child| key.derive_child(child))
            .map_err(|_| Error::InvalidArgument("path derives no valid key"))
    }
}

/// A derivation path: at most [`MAX_DEPTH`] child indices from the root, each with the hardened
/// bit ([`HARDENED`]) set or not. The wire form is the list of indices as `u32`, the form
/// PSBTs use, so there is no text to parse in the enclave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HdPath {
    children: Vec<ChildNumber>,
}

impl HdPath {
    /// The root itself (`m`).
    pub fn root() -> Self {
        Self {
            children: Vec::new(),
        }
    }

    /// A path from its indices (hardened ones have [`HARDENED`] set).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for more than [`MAX_DEPTH`] indices.
    pub fn from_indices(indices: &[u32]) -> Result<Self, Error> {
        if indices.len() > MAX_DEPTH {
            return Err(Error::InvalidArgument("derivation path deeper than 255"));
        }
        Ok(Self {
            children: indices.iter().map(|&i| ChildNumber(i)).collect(),
        })
    }

    /// The indices, hardened ones with [`HARDENED`] set.
    pub fn indices(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.0).collect()
    }

    /// Number of steps from the root.
    pub fn depth(&self) -> usize {
        self.children.len()
    }

    /// Whether `self` starts with `prefix` (a policy's allowed subtree).
    pub fn starts_with(&self, prefix: &HdPath) -> bool {
        self.children.starts_with(&prefix.children)
    }
}

/// The version bytes an extended public key is serialised with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XpubVersion {
    /// Mainnet, BIP-32 (`xpub`).
    Xpub,
    /// Testnet, BIP-32 (`tpub`).
    Tpub,
    /// Mainnet, BIP-84 native SegWit (`zpub`, SLIP-132).
    Zpub,
    /// Testnet, BIP-84 native SegWit (`vpub`, SLIP-132).
    Vpub,
}

impl XpubVersion {
    fn prefix(self) -> Prefix {
        match self {
            Self::Xpub => Prefix::XPUB,
            Self::Tpub => Prefix::TPUB,
            Self::Zpub => Prefix::ZPUB,
            Self::Vpub => Prefix::from_parts_unchecked("vpub", 0x045f_1cf6),
        }
    }
}

#[cfg(test)]
mod tests;
