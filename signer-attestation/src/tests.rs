//! The verifier against a real AWS-signed Nitro attestation document (testdata/fixtures).

use sha2::{Digest as _, Sha256};

use super::*;

const DOCUMENT: &[u8] = include_bytes!(
    "../../testdata/fixtures/nitro-attestation/attestation_eu-central-1_20250106.cose"
);
/// The time the fixture's source validates it at (PROVENANCE.md); its chain is valid from
/// 1736179622 to 1736190425.
const VALID_AT: u64 = 1_736_182_168;
const LEAF_NOT_AFTER: u64 = 1_736_190_425;
const PCR0: &str = "8bb159f202bb95d6d4d98e0e103918246cea734f1d57cd263e4fd56075ed53f6fa8c68854817a32749a241e11874c26b";
const PCR1: &str = "3b4a7e1b5f13c5a1000b3ed32ef8995ee13e9876329f9bc72650b918329ef9cf4e2e4d1e1e37375dab0ba56ba0974d03";
const PCR2: &str = "f4e86b12ad3df5f9fea962ff706c23ee190b463740a32f1a679a3cd1070a7731ddd83328fe3db5e8143ea94344b6fb95";

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn set(pcrs: &[(u16, &str)]) -> PcrSet {
    pcrs.iter()
        .map(|(i, v)| (*i, hex::decode(v).unwrap()))
        .collect()
}

fn policy() -> AttestationPolicy {
    AttestationPolicy {
        root: TrustAnchor::aws_nitro_g1(),
        allowed_pcrs: vec![set(&[(0, PCR0), (1, PCR1), (2, PCR2)])],
        expected_nonce: None,
        max_age: Duration::from_secs(3600),
    }
}

fn rejected(document: &[u8], policy: &AttestationPolicy, now: SystemTime) -> &'static str {
    match verify(document, policy, now) {
        Err(Error::Attestation(why)) => why,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn pinned_root_is_the_aws_nitro_g1() {
    let der = TrustAnchor::aws_nitro_g1().der;
    assert_eq!(
        hex::encode(Sha256::digest(&der)),
        "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    );
}

#[test]
fn accepts_the_real_document_at_its_time() {
    let verified = verify(DOCUMENT, &policy(), at(VALID_AT)).unwrap();
    assert_eq!(
        verified.module_id,
        "i-0bee92034f3d60691-enc01943c5eaab3ad6a"
    );
    assert_eq!(
        verified.timestamp,
        UNIX_EPOCH + Duration::from_millis(1_736_179_625_472)
    );
    assert_eq!(verified.pcrs.len(), 16);
    assert_eq!(hex::encode(&verified.pcrs[&0]), PCR0);
    assert_eq!(verified.public_key.as_ref().map(Vec::len), Some(294));
    assert_eq!((verified.user_data, verified.nonce), (None, None));
    // Up to the last second of the leaf's validity (the document is three hours old by then).
    let mut patient = policy();
    patient.max_age = Duration::from_secs(4 * 3600);
    assert!(verify(DOCUMENT, &patient, at(LEAF_NOT_AFTER)).is_ok());
}

#[test]
fn rejects_one_second_after_the_chain_expires() {
    let mut patient = policy();
    patient.max_age = Duration::from_secs(4 * 3600);
    assert_eq!(
        rejected(DOCUMENT, &patient, at(LEAF_NOT_AFTER + 1)),
        "certificate not valid at the given time"
    );
    // And now, as any verifier running today would see it.
    assert_eq!(
        rejected(DOCUMENT, &policy(), SystemTime::now()),
        "certificate not valid at the given time"
    );
}

#[test]
fn rejects_a_flipped_payload_byte() {
    let pcr0 = hex::decode(PCR0).unwrap();
    let offset = DOCUMENT
        .windows(pcr0.len())
        .position(|w| w == pcr0)
        .unwrap();
    let mut tampered = DOCUMENT.to_vec();
    tampered[offset + 7] ^= 0x01;
    let mut loose = policy();
    loose.allowed_pcrs = vec![set(&[(1, PCR1)])];
    assert_eq!(
        rejected(&tampered, &loose, at(VALID_AT)),
        "COSE signature does not verify"
    );
}

#[test]
fn rejects_every_single_bit_flip_in_the_signature() {
    let mut tampered = DOCUMENT.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x80;
    assert_eq!(
        rejected(&tampered, &policy(), at(VALID_AT)),
        "COSE signature does not verify"
    );
}

#[test]
fn rejects_a_replaced_root() {
    // Pin another certificate (the document's first intermediate) as the root.
    let sign1 = cbor::CoseSign1::parse(DOCUMENT).unwrap();
    let payload = cbor::Payload::parse(&sign1.payload).unwrap();
    let mut other = policy();
    other.root = TrustAnchor::development(payload.cabundle[1].clone());
    assert_eq!(
        rejected(DOCUMENT, &other, at(VALID_AT)),
        "certificate chain does not start at the pinned root"
    );
}

#[test]
fn rejects_a_wrong_pcr0_and_accepts_any_matching_set() {
    let mut wrong = policy();
    wrong.allowed_pcrs = vec![set(&[(0, &"00".repeat(48)), (1, PCR1)])];
    assert_eq!(
        rejected(DOCUMENT, &wrong, at(VALID_AT)),
        "PCRs match no allowed set"
    );
    // A rolling deployment allows the old and the new image: either matching set is enough.
    let mut rolling = wrong.clone();
    rolling.allowed_pcrs.push(set(&[(0, PCR0)]));
    assert!(verify(DOCUMENT, &rolling, at(VALID_AT)).is_ok());
}

#[test]
fn rejects_a_wrong_nonce() {
    let mut with_nonce = policy();
    with_nonce.expected_nonce = Some(b"fresh client nonce".to_vec());
    assert_eq!(
        rejected(DOCUMENT, &with_nonce, at(VALID_AT)),
        "nonce does not match"
    );
}

#[test]
fn an_empty_allow_list_rejects_instead_of_accepting() {
    let mut none = policy();
    none.allowed_pcrs.clear();
    assert_eq!(
        rejected(DOCUMENT, &none, at(VALID_AT)),
        "no PCR allow-list configured: refusing every document"
    );
    none.allowed_pcrs = vec![PcrSet::new()];
    assert_eq!(
        rejected(DOCUMENT, &none, at(VALID_AT)),
        "no PCR allow-list configured: refusing every document"
    );
}

#[test]
fn rejects_a_stale_document() {
    let mut strict = policy();
    strict.max_age = Duration::from_secs(60);
    assert_eq!(
        rejected(DOCUMENT, &strict, at(VALID_AT)),
        "document is too old"
    );
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    for len in [0, 1, 10, 100, 1000, DOCUMENT.len() - 1] {
        assert!(
            verify(&DOCUMENT[..len], &policy(), at(VALID_AT)).is_err(),
            "truncated to {len}"
        );
    }
    assert_eq!(
        rejected(&vec![0u8; MAX_DOCUMENT_BYTES + 1], &policy(), at(VALID_AT)),
        "document too large"
    );
    assert!(verify(&[0x84, 0x40, 0xa0, 0x40, 0x40], &policy(), at(VALID_AT)).is_err());
}
