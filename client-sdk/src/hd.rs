//! Deposit addresses from an account's extended public key, without calling the service: parse
//! an `xpub`/`tpub`/`zpub`/`vpub` (BIP-32, SLIP-132), derive non-hardened children, and make
//! BIP-84 (P2WPKH) and BIP-86 (P2TR key-path) addresses. Parsing, derivation, addresses and the
//! Taproot tweak are rust-bitcoin's; this module adds the version forms and the checks BIP-32
//! asks of an importer that rust-bitcoin leaves out (a depth-0 key names no parent).

use std::str::FromStr;

use bitcoin::bip32::{ChildNumber, Xpub};
use bitcoin::key::{CompressedPublicKey, Secp256k1, UntweakedPublicKey};
use bitcoin::{Address, KnownHrp, NetworkKind};

use crate::Error;

/// Parses a derivation path written the BIP-32 way (`m/84'/0'/0'/0/7`; `h` or `'` marks a
/// hardened index) into the indices the service takes, hardened ones with [`HARDENED`] set.
///
/// # Errors
/// [`Error::InvalidArgument`] for anything else, or a path deeper than 255.
pub fn parse_path(text: &str) -> Result<Vec<u32>, Error> {
    let path: bitcoin::bip32::DerivationPath = text
        .parse()
        .map_err(|_| Error::InvalidArgument("not a BIP-32 derivation path"))?;
    if path.len() > 255 {
        return Err(Error::InvalidArgument("derivation path deeper than 255"));
    }
    Ok(path.into_iter().map(|&child| u32::from(child)).collect())
}

/// Writes a path the BIP-32 way (`m/84'/0'/0'`), hardened indices with `'`.
pub fn format_path(indices: &[u32]) -> String {
    let mut text = String::from("m");
    for &index in indices {
        if index >= HARDENED {
            text.push_str(&format!("/{}'", index - HARDENED));
        } else {
            text.push_str(&format!("/{index}"));
        }
    }
    text
}

/// Serialised length of an extended key (BIP-32).
const XKEY_LEN: usize = 78;
/// The hardened bit of a child index (BIP-32: indices from 2^31 are hardened); an
/// extended public key cannot derive those.
pub const HARDENED: u32 = 1 << 31;

/// The version bytes an extended public key is written with, and the network they name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XpubVersion {
    /// Mainnet, BIP-32 (`xpub`); BIP-86 accounts use it too.
    Xpub,
    /// Testnet, BIP-32 (`tpub`).
    Tpub,
    /// Mainnet, BIP-84 native SegWit (`zpub`, SLIP-132).
    Zpub,
    /// Testnet, BIP-84 native SegWit (`vpub`, SLIP-132).
    Vpub,
}

impl FromStr for XpubVersion {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "xpub" => Ok(Self::Xpub),
            "tpub" => Ok(Self::Tpub),
            "zpub" => Ok(Self::Zpub),
            "vpub" => Ok(Self::Vpub),
            _ => Err(Error::InvalidArgument(
                "an xpub version is xpub, tpub, zpub or vpub",
            )),
        }
    }
}

impl XpubVersion {
    const ALL: [Self; 4] = [Self::Xpub, Self::Tpub, Self::Zpub, Self::Vpub];

    fn bytes(self) -> [u8; 4] {
        match self {
            Self::Xpub => [0x04, 0x88, 0xb2, 0x1e],
            Self::Tpub => [0x04, 0x35, 0x87, 0xcf],
            Self::Zpub => [0x04, 0xb2, 0x47, 0x46],
            Self::Vpub => [0x04, 0x5f, 0x1c, 0xf6],
        }
    }

    /// Mainnet or a test network.
    pub fn network(self) -> NetworkKind {
        match self {
            Self::Xpub | Self::Zpub => NetworkKind::Main,
            Self::Tpub | Self::Vpub => NetworkKind::Test,
        }
    }
}

/// An account's extended public key, as an HD wallet exports it at a hardened account path
/// (`m/84'/0'/0'`). Everything below it that is not hardened (`0/i` receiving, `1/i` change)
/// derives here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountXpub {
    xpub: Xpub,
    version: XpubVersion,
}

impl FromStr for AccountXpub {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        if text.len() > 2 * XKEY_LEN {
            return Err(Error::InvalidArgument("extended public key too long"));
        }
        let mut data = bitcoin::base58::decode_check(text)
            .map_err(|_| Error::InvalidArgument("extended public key is not Base58Check"))?;
        if data.len() != XKEY_LEN {
            return Err(Error::InvalidArgument(
                "extended public key has the wrong length",
            ));
        }
        let version = XpubVersion::ALL
            .into_iter()
            .find(|version| data.starts_with(&version.bytes()))
            .ok_or(Error::InvalidArgument(
                "not an xpub, tpub, zpub or vpub (private and unknown versions are refused)",
            ))?;
        // rust-bitcoin reads the BIP-32 versions only; the SLIP-132 ones differ in nothing else.
        let base = match version.network() {
            NetworkKind::Main => XpubVersion::Xpub,
            NetworkKind::Test => XpubVersion::Tpub,
        };
        data[..4].copy_from_slice(&base.bytes());
        let xpub = Xpub::decode(&data)
            .map_err(|_| Error::InvalidArgument("extended public key is not a valid key"))?;
        if xpub.depth == 0
            && (xpub.parent_fingerprint != Default::default()
                || xpub.child_number != ChildNumber::from(0))
        {
            return Err(Error::InvalidArgument(
                "extended public key at depth 0 names a parent or an index",
            ));
        }
        Ok(Self { xpub, version })
    }
}

impl std::fmt::Display for AccountXpub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut data = self.xpub.encode();
        data[..4].copy_from_slice(&self.version.bytes());
        f.write_str(&bitcoin::base58::encode_check(&data))
    }
}

impl AccountXpub {
    /// The key's SEC1 compressed public key.
    pub fn public_key(&self) -> [u8; 33] {
        self.xpub.public_key.serialize()
    }

    /// The index it was derived at from its parent (hardened ones with bit 31 set).
    pub fn child_index(&self) -> u32 {
        u32::from(self.xpub.child_number)
    }

    /// The version it was written with.
    pub fn version(&self) -> XpubVersion {
        self.version
    }

    /// Its depth below the root (3 for a BIP-84 or BIP-86 account).
    pub fn depth(&self) -> u8 {
        self.xpub.depth
    }

    /// The public key at `path` below this key (non-hardened indices only).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a hardened index or an index that derives no key.
    pub fn derive(&self, path: &[u32]) -> Result<CompressedPublicKey, Error> {
        let children = path
            .iter()
            .map(|&index| {
                if index >= HARDENED {
                    return Err(Error::InvalidArgument(
                        "an extended public key cannot derive a hardened index",
                    ));
                }
                ChildNumber::from_normal_idx(index)
                    .map_err(|_| Error::InvalidArgument("child index out of range"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.xpub
            .derive_pub(&Secp256k1::verification_only(), &children)
            .map(Xpub::to_pub)
            .map_err(|_| Error::InvalidArgument("path derives no valid key"))
    }

    /// The BIP-84 native SegWit (P2WPKH) address at `chain/index` (chain 0 receives, 1 is
    /// change), for the network the key's version names, or `hrp` if given (regtest: `bcrt`).
    ///
    /// # Errors
    /// As [`AccountXpub::derive`].
    pub fn p2wpkh_address(
        &self,
        chain: u32,
        index: u32,
        hrp: Option<KnownHrp>,
    ) -> Result<Address, Error> {
        let key = self.derive(&[chain, index])?;
        Ok(Address::p2wpkh(&key, hrp.unwrap_or(self.hrp())))
    }

    /// The BIP-86 Taproot (P2TR, key path only, no script tree) address at `chain/index`: the
    /// derived key is the internal key, tweaked as BIP-341 says.
    ///
    /// # Errors
    /// As [`AccountXpub::derive`].
    pub fn p2tr_address(
        &self,
        chain: u32,
        index: u32,
        hrp: Option<KnownHrp>,
    ) -> Result<Address, Error> {
        let internal = UntweakedPublicKey::from(self.derive(&[chain, index])?.0);
        Ok(Address::p2tr(
            &Secp256k1::verification_only(),
            internal,
            None,
            hrp.unwrap_or(self.hrp()),
        ))
    }

    /// The same key written with `version` (`xpub` as `zpub` or, for a test network's account,
    /// `vpub`). The enclave exports `xpub`; the version only says which network addresses
    /// default to, and the key and chain code stay as they are.
    pub fn with_version(&self, version: XpubVersion) -> Self {
        Self {
            xpub: self.xpub,
            version,
        }
    }

    fn hrp(&self) -> KnownHrp {
        match self.version.network() {
            NetworkKind::Main => KnownHrp::Mainnet,
            NetworkKind::Test => KnownHrp::Testnets,
        }
    }
}

#[cfg(test)]
mod tests;
