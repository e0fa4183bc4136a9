//! HD derivation against the published vectors (BIP-32 1–4, BIP-39 with `TREZOR`, BIP-84,
//! BIP-86), and the limits on seeds, mnemonics and paths.

use std::str::FromStr as _;

use bip32::XPrv;
use k256::ecdsa::SigningKey;
use serde_json::Value;

use super::*;

const BIP32: &str = include_str!("../../../testdata/vectors/bip32_vectors.json");
const BIP39: &str = include_str!("../../../testdata/vectors/bip39_trezor_vectors.json");
const BIP84_86: &str = include_str!("../../../testdata/vectors/bip84_bip86_vectors.json");

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("vector file parses")
}

fn hex(value: &Value) -> Vec<u8> {
    let text = value.as_str().expect("hex string");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// "m/84'/0'/0'/0/5" as indices (the vectors' notation; the enclave takes indices only).
fn indices(path: &str) -> Vec<u32> {
    path.split('/')
        .skip(1)
        .map(|step| match step.strip_suffix(['\'', 'H']) {
            Some(hardened) => hardened.parse::<u32>().expect("index") | HARDENED,
            None => step.parse::<u32>().expect("index"),
        })
        .collect()
}

fn path(text: &str) -> HdPath {
    HdPath::from_indices(&indices(text)).expect("path")
}

fn public_key(secret: &WalletSecret) -> Vec<u8> {
    let key = SigningKey::from_slice(secret.expose_secret()).expect("valid scalar");
    key.verifying_key().to_sec1_point(true).as_bytes().to_vec()
}

/// The private key an expected `xprv` encodes (decoded by the `bip32` crate).
fn xprv_scalar(xprv: &str) -> Vec<u8> {
    XPrv::from_str(xprv)
        .expect("vector xprv decodes")
        .private_key()
        .to_bytes()
        .to_vec()
}

#[test]
fn bip32_vectors_1_to_4_derive_every_published_key() {
    let vectors = json(BIP32);
    let mut steps = 0;
    for vector in vectors["vectors"].as_array().expect("vectors") {
        let seed = HdSeed::from_bytes(&hex(&vector["seed_hex"]))
            .and_then(|seed| seed.root())
            .expect("seed");
        for step in vector["chains"].as_array().expect("chains") {
            let indices: Vec<u32> = step["indices"]
                .as_array()
                .expect("indices")
                .iter()
                .map(|i| u32::try_from(i.as_u64().expect("index")).expect("u32"))
                .collect();
            let path = HdPath::from_indices(&indices).expect("path");
            assert_eq!(path.indices(), indices);
            let xpub = seed.xpub(&path, XpubVersion::Xpub).expect("xpub");
            assert_eq!(
                xpub,
                step["xpub"].as_str().expect("xpub"),
                "{}",
                step["path"]
            );
            let secret = seed.derive(&path).expect("derive");
            assert_eq!(
                secret.expose_secret().to_vec(),
                xprv_scalar(step["xprv"].as_str().expect("xprv")),
                "{}",
                step["path"]
            );
            // The export path (one derivation for both) gives the same xpub and the secret's
            // public key.
            let (public, exported) = seed.public_at(&path, XpubVersion::Xpub).expect("public");
            assert_eq!(exported, xpub);
            assert_eq!(public.compressed().to_vec(), public_key(&secret));
            steps += 1;
        }
    }
    assert_eq!(steps, 17, "BIP-32 vectors 1-4 have 17 steps");
}

#[test]
fn bip39_trezor_vectors_give_the_published_seeds_and_roots() {
    let vectors = json(BIP39);
    let english = vectors["english"].as_array().expect("english");
    assert_eq!(english.len(), 24);
    for case in english {
        let mnemonic = case[1].as_str().expect("mnemonic");
        let seed = HdSeed::from_mnemonic(mnemonic, "TREZOR").expect("mnemonic");
        assert_eq!(seed.expose_secret(), hex(&case[2]).as_slice(), "{mnemonic}");
        let seed = seed.root().expect("root");
        let root = XPrv::from_str(case[3].as_str().expect("xprv")).expect("xprv");
        assert_eq!(
            seed.xpub(&HdPath::root(), XpubVersion::Xpub).expect("xpub"),
            root.public_key().to_string(Prefix::XPUB)
        );
        assert_eq!(
            seed.derive(&HdPath::root())
                .expect("derive")
                .expose_secret()
                .to_vec(),
            root.private_key().to_bytes().to_vec()
        );
    }
}

#[test]
fn bip84_and_bip86_account_keys_and_addresses_keys() {
    let vectors = json(BIP84_86);
    for bip in ["bip84", "bip86"] {
        let groups = vectors[bip].as_array().expect("groups");
        let mnemonic = groups[0]["mnemonic"].as_str().expect("mnemonic");
        let seed = HdSeed::from_mnemonic(mnemonic, "")
            .and_then(|seed| seed.root())
            .expect("mnemonic");
        let version = if bip == "bip84" {
            XpubVersion::Zpub
        } else {
            XpubVersion::Xpub
        };
        assert_eq!(
            seed.xpub(&HdPath::root(), version).expect("root"),
            groups[0]["rootpub"].as_str().expect("rootpub"),
            "{bip} root"
        );
        for group in &groups[1..] {
            let at = path(group["path"].as_str().expect("path"));
            if let Some(expected) = group["xpub"].as_str() {
                assert_eq!(seed.xpub(&at, version).expect("xpub"), expected, "{bip}");
            }
            if let Some(pubkey) = group.get("pubkey") {
                assert_eq!(public_key(&seed.derive(&at).expect("derive")), hex(pubkey));
            }
            if let Some(internal) = group.get("internal_key") {
                // BIP-86's internal key is the x-only public key at the path.
                assert_eq!(
                    public_key(&seed.derive(&at).expect("derive"))[1..],
                    hex(internal)[..]
                );
            }
        }
    }
}

#[test]
fn testnet_versions_serialise_the_same_key() {
    let seed = HdSeed::from_mnemonic(
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
        "",
    )
    .and_then(|seed| seed.root())
    .expect("mnemonic");
    let at = path("m/84'/1'/0'");
    let tpub = seed.xpub(&at, XpubVersion::Tpub).expect("tpub");
    let vpub = seed.xpub(&at, XpubVersion::Vpub).expect("vpub");
    assert!(
        tpub.starts_with("tpub") && vpub.starts_with("vpub"),
        "{tpub} {vpub}"
    );
    let key = |text: &str| ExtendedKey::from_str(text).expect("decodes").key_bytes;
    assert_eq!(key(&tpub), key(&vpub));
}

#[test]
fn fingerprints_are_the_roots() {
    // BIP-32 vector 1's first child names its parent, the root, by fingerprint.
    let vectors = json(BIP32);
    let vector = &vectors["vectors"][0];
    let seed = HdSeed::from_bytes(&hex(&vector["seed_hex"]))
        .and_then(|seed| seed.root())
        .expect("seed");
    let child = XPrv::from_str(vector["chains"][1]["xprv"].as_str().expect("xprv")).expect("xprv");
    assert_eq!(
        seed.fingerprint().expect("fingerprint"),
        child.attrs().parent_fingerprint
    );
}

#[test]
fn seeds_have_the_bip32_lengths() {
    for len in [0, 1, 15, 17, 31, 33, 63, 65, 128] {
        assert!(
            matches!(
                HdSeed::from_bytes(&vec![7; len]),
                Err(Error::InvalidArgument(_))
            ),
            "{len}"
        );
    }
    for len in [16, 32, 64] {
        assert_eq!(
            HdSeed::from_bytes(&vec![7; len])
                .expect("seed")
                .expose_secret()
                .len(),
            len
        );
    }
    let a = HdSeed::random().expect("rng");
    let b = HdSeed::random().expect("rng");
    assert_eq!(a.expose_secret().len(), RANDOM_SEED_LEN);
    assert_ne!(a.expose_secret(), b.expose_secret());
    assert_eq!(format!("{a:?}"), "HdSeed([REDACTED])");
}

#[test]
fn bad_mnemonics_are_invalid_arguments() {
    let good = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";
    let bad = [
        // Checksum: the last word of the all-zero 12-word phrase is "about", not "abandon".
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon",
        // Not a word of the English list.
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon bitcoinz",
        // Eleven words.
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
        "",
    ];
    assert!(HdSeed::from_mnemonic(good, "").is_ok());
    for phrase in bad {
        assert!(
            matches!(
                HdSeed::from_mnemonic(phrase, ""),
                Err(Error::InvalidArgument(_))
            ),
            "{phrase:?}"
        );
    }
    let long = format!("{good} ").repeat(10_000);
    assert!(matches!(
        HdSeed::from_mnemonic(&long, ""),
        Err(Error::InvalidArgument("mnemonic or passphrase too long"))
    ));
    let passphrase = "p".repeat(MAX_PASSPHRASE_BYTES);
    assert!(HdSeed::from_mnemonic(good, &passphrase).is_ok());
    assert!(matches!(
        HdSeed::from_mnemonic(good, &format!("{passphrase}p")),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn paths_are_limited_to_bip32_depth() {
    let seed = HdSeed::from_bytes(&[1; 32])
        .and_then(|seed| seed.root())
        .expect("seed");
    let deepest = HdPath::from_indices(&[HARDENED | 7; MAX_DEPTH]).expect("255 steps");
    assert_eq!(deepest.depth(), MAX_DEPTH);
    assert!(seed.derive(&deepest).is_ok());
    assert!(matches!(
        HdPath::from_indices(&[0; MAX_DEPTH + 1]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(HdPath::from_indices(&vec![0; 1 << 20]).is_err());
    // Hardened and non-hardened steps with the same low bits are different keys.
    let soft = seed
        .derive(&HdPath::from_indices(&[5]).expect("path"))
        .expect("derive");
    let hard = seed
        .derive(&HdPath::from_indices(&[5 | HARDENED]).expect("path"))
        .expect("derive");
    assert!(!soft.ct_eq(&hard));
    assert!(path("m/84'/0'/0'/0/1").starts_with(&path("m/84'/0'")));
    assert!(!path("m/84'/0'").starts_with(&path("m/84'/0'/0'")));
    assert!(!path("m/84/0'/0'").starts_with(&path("m/84'")));
}
