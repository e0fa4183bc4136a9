//! BIP-341's key-path signing vectors through the enclave's path: rust-bitcoin's sighash, its
//! Taproot tweak, and each backend's BIP-340 signature (all-zero aux_rand, as the vectors).

use bitcoin::consensus::deserialize;
use bitcoin::{Amount, ScriptBuf, Transaction};

use super::*;
use crate::backend::{K256, Libsecp256k1};

fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!(
        "../../../testdata/vectors/bip341_wallet_test_vectors.json"
    ))
    .unwrap()
}

fn key_path_vectors<B: Backend>() {
    let vectors = vectors();
    let spending = &vectors["keyPathSpending"][0];
    let given = &spending["given"];
    let tx: Transaction =
        deserialize(&hex::decode(given["rawUnsignedTx"].as_str().unwrap()).unwrap()).unwrap();
    let prevouts: Vec<TxOut> = given["utxosSpent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|utxo| TxOut {
            value: Amount::from_sat(utxo["amountSats"].as_u64().unwrap()),
            script_pubkey: ScriptBuf::from_bytes(
                hex::decode(utxo["scriptPubKey"].as_str().unwrap()).unwrap(),
            ),
        })
        .collect();
    let secp = Secp256k1::new();
    let mut cache = SighashCache::new(&tx);
    let inputs = spending["inputSpending"].as_array().unwrap();
    assert_eq!(inputs.len(), 7);
    for input in inputs {
        let index = usize::try_from(input["given"]["txinIndex"].as_u64().unwrap()).unwrap();
        let hash_type = u8::try_from(input["given"]["hashType"].as_u64().unwrap()).unwrap();
        let sighash_type = TapSighashType::from_consensus_u8(hash_type).unwrap();
        let sighash = cache
            .taproot_key_spend_signature_hash(index, &Prevouts::All(&prevouts), sighash_type)
            .unwrap();
        assert_eq!(
            hex::encode(sighash.to_byte_array()),
            input["intermediary"]["sigHash"].as_str().unwrap()
        );
        let merkle_root = input["given"]["merkleRoot"].as_str().map(|root| {
            bitcoin::TapNodeHash::from_byte_array(hex::decode(root).unwrap().try_into().unwrap())
        });
        let secret: [u8; 32] = hex::decode(input["given"]["internalPrivkey"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let key = B::load(&WalletSecret::from_bytes(&secret)).unwrap();
        let signature =
            sign_taproot::<B>(&secp, &key, sighash.to_byte_array(), merkle_root, &[0; 32]).unwrap();
        let expected = input["expected"]["witness"][0].as_str().unwrap();
        assert_eq!(
            hex::encode(signature.serialize()),
            expected[..128],
            "input {index}"
        );
        // The output key the signature verifies under is the spent output's.
        assert_eq!(
            &prevouts[index].script_pubkey.as_bytes()[2..],
            Keypair::from_seckey_slice(&secp, &secret)
                .unwrap()
                .tap_tweak(&secp, merkle_root)
                .to_keypair()
                .x_only_public_key()
                .0
                .serialize()
        );
    }
}

#[test]
fn bip341_key_path_vectors_k256() {
    key_path_vectors::<K256>();
}

#[test]
fn bip341_key_path_vectors_libsecp256k1() {
    key_path_vectors::<Libsecp256k1>();
}

#[test]
fn the_size_floor_counts_each_witness_at_its_smallest() {
    let tx: Transaction = deserialize(
        &hex::decode(
            vectors()["keyPathSpending"][0]["given"]["rawUnsignedTx"]
                .as_str()
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let base = tx.weight().to_wu() + 2;
    assert_eq!(vsize_floor(&tx, &[]), base.div_ceil(4));
    assert_eq!(vsize_floor(&tx, &[Script::P2tr]), (base + 66).div_ceil(4));
    assert_eq!(
        vsize_floor(&tx, &[Script::P2wpkh, Script::P2shP2wpkh]),
        (base + 107 + 107 + 92).div_ceil(4)
    );
}
