//! Extended public keys and addresses against the published vectors: BIP-84 and BIP-86
//! addresses, BIP-32 vectors 1–4 (public derivation) and 5 (keys an importer must refuse).

use serde_json::Value;

use super::*;

const BIP32: &str = include_str!("../../../testdata/vectors/bip32_vectors.json");
const BIP84_86: &str = include_str!("../../../testdata/vectors/bip84_bip86_vectors.json");

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("vector file parses")
}

fn text(value: &Value) -> &str {
    value.as_str().expect("string")
}

/// "m/84'/0'/0'/0/5" → the last two indices (chain, index), which must be non-hardened.
fn chain_and_index(path: &str) -> (u32, u32) {
    let steps: Vec<u32> = path
        .rsplit('/')
        .take(2)
        .map(|step| step.parse().expect("non-hardened index"))
        .collect();
    (steps[1], steps[0])
}

#[test]
fn bip84_receiving_and_change_addresses() {
    let vectors = json(BIP84_86);
    let groups = vectors["bip84"].as_array().expect("groups");
    let account: AccountXpub = text(&groups[1]["xpub"]).parse().expect("zpub");
    assert_eq!(account.version(), XpubVersion::Zpub);
    assert_eq!(account.depth(), 3);
    assert_eq!(account.to_string(), text(&groups[1]["xpub"]));
    let mut checked = 0;
    for group in &groups[2..] {
        let (chain, index) = chain_and_index(text(&group["path"]));
        let key = account.derive(&[chain, index]).expect("derive");
        assert_eq!(key.to_string(), text(&group["pubkey"]));
        let address = account.p2wpkh_address(chain, index, None).expect("address");
        assert_eq!(address.to_string(), text(&group["address"]));
        checked += 1;
    }
    assert_eq!(checked, 3);
}

#[test]
fn bip86_taproot_addresses_and_output_keys() {
    let vectors = json(BIP84_86);
    let groups = vectors["bip86"].as_array().expect("groups");
    let account: AccountXpub = text(&groups[1]["xpub"]).parse().expect("xpub");
    assert_eq!(account.version(), XpubVersion::Xpub);
    let mut checked = 0;
    for group in &groups[2..] {
        let (chain, index) = chain_and_index(text(&group["path"]));
        let address = account.p2tr_address(chain, index, None).expect("address");
        assert_eq!(address.to_string(), text(&group["address"]));
        let script = address.script_pubkey().to_hex_string();
        assert_eq!(script, text(&group["scriptPubKey"]));
        assert_eq!(&script[4..], text(&group["output_key"]));
        let internal = account.derive(&[chain, index]).expect("derive").to_string();
        assert_eq!(&internal[2..], text(&group["internal_key"]));
        checked += 1;
    }
    assert_eq!(checked, 3);
}

#[test]
fn bip32_vectors_1_to_4_parse_and_derive_their_public_children() {
    let vectors = json(BIP32);
    let mut derived = 0;
    for vector in vectors["vectors"].as_array().expect("vectors") {
        let chain = vector["chains"].as_array().expect("chains");
        for pair in chain.windows(2) {
            let parent: AccountXpub = text(&pair[0]["xpub"]).parse().expect("xpub");
            let child: AccountXpub = text(&pair[1]["xpub"]).parse().expect("xpub");
            assert_eq!(parent.to_string(), text(&pair[0]["xpub"]));
            let index = pair[1]["indices"]
                .as_array()
                .and_then(|indices| indices.last())
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .expect("index");
            let expected = child.derive(&[]).expect("own key");
            if index < HARDENED {
                assert_eq!(parent.derive(&[index]).expect("derive"), expected);
                derived += 1;
            } else {
                assert!(matches!(
                    parent.derive(&[index]),
                    Err(Error::InvalidArgument(_))
                ));
            }
        }
    }
    assert_eq!(derived, 6, "vectors 1-4 have 6 non-hardened steps");
}

#[test]
fn bip32_vector_5_keys_are_refused() {
    let vectors = json(BIP32);
    let invalid = vectors["invalid_keys"].as_array().expect("invalid keys");
    assert_eq!(invalid.len(), 16);
    for case in invalid {
        assert!(
            matches!(
                text(&case["key"]).parse::<AccountXpub>(),
                Err(Error::InvalidArgument(_))
            ),
            "{}",
            case["reason"]
        );
    }
}

#[test]
fn private_keys_testnet_forms_and_garbage() {
    let vectors = json(BIP32);
    let step = &vectors["vectors"][0]["chains"][1];
    assert!(text(&step["xprv"]).parse::<AccountXpub>().is_err());
    let xpub: AccountXpub = text(&step["xpub"]).parse().expect("xpub");
    for garbage in ["", "xpub", "0OIl", &"1".repeat(10_000)] {
        assert!(garbage.parse::<AccountXpub>().is_err(), "{garbage:.20}");
    }
    // The same key in each form parses to the same public key and names its network.
    let mut data = xpub.xpub.encode();
    for version in XpubVersion::ALL {
        data[..4].copy_from_slice(&version.bytes());
        let other: AccountXpub = bitcoin::base58::encode_check(&data).parse().expect("form");
        assert_eq!(other.version(), version);
        assert_eq!(
            other.derive(&[7]).expect("derive"),
            xpub.derive(&[7]).expect("derive")
        );
    }
    let testnet: AccountXpub = {
        data[..4].copy_from_slice(&XpubVersion::Vpub.bytes());
        bitcoin::base58::encode_check(&data).parse().expect("vpub")
    };
    let address = testnet.p2wpkh_address(0, 0, None).expect("address");
    assert!(address.to_string().starts_with("tb1q"), "{address}");
    let regtest = testnet
        .p2tr_address(0, 0, Some(KnownHrp::Regtest))
        .expect("address");
    assert!(regtest.to_string().starts_with("bcrt1p"), "{regtest}");
}

#[test]
fn paths_format_back_to_what_parses() {
    for text in ["m", "m/84'/0'/0'", "m/0/1/2147483647'", "m/44'/60'/0'/0/7"] {
        assert_eq!(format_path(&parse_path(text).unwrap()), text);
    }
    assert_eq!(format_path(&[HARDENED | 84, 5]), "m/84'/5");
}

#[test]
fn versions_rewrite_the_prefix_and_the_default_network_only() {
    // BIP-84's account key, as a zpub and as the xpub the service exports.
    let zpub: AccountXpub = "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs".parse().unwrap();
    let xpub = zpub.with_version(XpubVersion::Xpub);
    assert_eq!(xpub.public_key(), zpub.public_key());
    assert!(xpub.to_string().starts_with("xpub"));
    assert_eq!(xpub.with_version(XpubVersion::Zpub), zpub);
    let vpub = zpub.with_version(XpubVersion::Vpub);
    assert!(vpub.to_string().starts_with("vpub"));
    assert!(
        vpub.p2wpkh_address(0, 0, None)
            .unwrap()
            .to_string()
            .starts_with("tb1")
    );
    assert_eq!(
        zpub.p2wpkh_address(0, 0, None).unwrap().to_string(),
        "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
    );
    assert_eq!("vpub".parse::<XpubVersion>().unwrap(), XpubVersion::Vpub);
    assert!("ypub".parse::<XpubVersion>().is_err());
}
