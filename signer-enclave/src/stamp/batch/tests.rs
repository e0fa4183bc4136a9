//! The batcher: requests ready together are verified together, and a bad stamp refuses only
//! its own request, whether it fails the equation or its encoding.

use ed25519_dalek::Signer as _;
use futures_util::future::join_all;

use super::*;
use crate::testing::ready;

fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

/// A request's stamp message and its Ed25519 stamps.
type Request = (Vec<u8>, Vec<(VerifyingKey, Signature)>);

/// Request `n`'s message and its stamp by key `n`.
fn request(n: u8) -> Request {
    let message = format!("stamp message of request {n}").into_bytes();
    let key = key(n);
    let stamps = vec![(key.verifying_key(), key.sign(&message))];
    (message, stamps)
}

/// Verifies `requests` as if they arrived together: each queues and yields before any resumes.
fn together(batcher: &StampBatcher, requests: Vec<Request>) -> Vec<bool> {
    let arrivals: Vec<Arrival> = requests.iter().map(|_| batcher.arrival()).collect();
    let verdicts = ready(join_all(
        requests
            .into_iter()
            .map(|(message, stamps)| batcher.verify(message, stamps)),
    ));
    drop(arrivals);
    assert_eq!(batcher.in_flight.load(Ordering::Acquire), 0);
    verdicts
}

#[test]
fn a_lone_request_is_verified_alone() {
    let batcher = StampBatcher::default();
    let _arrival = batcher.arrival();
    let (message, stamps) = request(1);
    assert!(ready(batcher.verify(message.clone(), stamps.clone())));
    let (_, others) = request(2);
    assert!(!ready(batcher.verify(message, others)));
    assert_eq!(batcher.stats(), BatchStats::default());
    assert!(!batcher.busy());
}

#[test]
fn overlapping_requests_make_the_enclave_busy_for_a_while() {
    let batcher = StampBatcher::default();
    let first = batcher.arrival();
    assert!(!batcher.busy());
    let second = batcher.arrival();
    assert!(batcher.busy());
    drop((first, second));
    // Still busy after the overlap: the next request queues (its verdict is the same).
    assert!(batcher.busy());
    let (message, stamps) = request(1);
    assert!(ready(batcher.verify(message, stamps)));
    // Until the window passes.
    batcher.busy_until.store(0, Ordering::Release);
    assert!(!batcher.busy());
}

#[test]
fn requests_ready_together_are_verified_in_one_batch() {
    let batcher = StampBatcher::default();
    let verdicts = together(&batcher, (1..=20).map(request).collect());
    assert_eq!(verdicts, vec![true; 20]);
    assert_eq!(
        batcher.stats(),
        BatchStats {
            batches: 1,
            requests: 20,
            failed: 0,
        }
    );
}

#[test]
fn a_long_queue_is_verified_in_batches_of_at_most_64() {
    let batcher = StampBatcher::default();
    let verdicts = together(&batcher, (1..=70).map(request).collect());
    assert_eq!(verdicts, vec![true; 70]);
    assert_eq!(
        batcher.stats(),
        BatchStats {
            batches: 2,
            requests: 70,
            failed: 0,
        }
    );
}

#[test]
fn a_bad_stamp_in_a_batch_refuses_only_its_own_request() {
    let mut requests: Vec<_> = (1..=12).map(request).collect();
    // A flipped bit in one signature.
    requests[3].1[0].1 = {
        let mut bytes = requests[3].1[0].1.to_bytes();
        bytes[5] ^= 1;
        Signature::from_bytes(&bytes)
    };
    // A stamp over another message.
    requests[6].0.push(b'!');
    // A non-canonical S (S + ℓ): refused by the strict check and by the batch's parsing alike.
    requests[8].1[0].1 = {
        let mut bytes = requests[8].1[0].1.to_bytes();
        let mut s = [0u8; 32];
        s.copy_from_slice(&bytes[32..]);
        add_group_order(&mut s);
        bytes[32..].copy_from_slice(&s);
        Signature::from_bytes(&bytes)
    };
    // Two stamps, one by a key that did not sign this message.
    let (_, stranger) = request(99);
    requests[10].1.push(stranger[0]);
    let batcher = StampBatcher::default();
    let verdicts = together(&batcher, requests);
    let refused: Vec<usize> = (0..verdicts.len()).filter(|&i| !verdicts[i]).collect();
    assert_eq!(refused, [3, 6, 8, 10]);
    // Through a batch that failed and was checked again one by one, not twelve lone checks.
    assert_eq!(
        batcher.stats(),
        BatchStats {
            batches: 1,
            requests: 12,
            failed: 1,
        }
    );
}

/// `s += ℓ` (little-endian), the group order of Ed25519's base point.
fn add_group_order(s: &mut [u8; 32]) {
    const ORDER: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (byte, add) in s.iter_mut().zip(ORDER) {
        let sum = u16::from(*byte) + u16::from(add) + carry;
        *byte = sum.to_le_bytes()[0];
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S < ℓ < 2²⁵³, so S + ℓ fits in 32 bytes");
}

#[test]
fn a_dropped_requests_stamps_leave_the_queue_with_the_next_request() {
    let batcher = StampBatcher::default();
    let arrivals = (batcher.arrival(), batcher.arrival());
    let (message, stamps) = request(1);
    let mut dropped = Box::pin(batcher.verify(message, stamps));
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    // Queued, yielded, then its client went away.
    assert!(dropped.as_mut().poll(&mut context).is_pending());
    drop(dropped);
    drop(arrivals);
    assert_eq!(batcher.jobs().len(), 1);
    batcher.busy_until.store(0, Ordering::Release);
    let (message, stamps) = request(2);
    assert!(ready(batcher.verify(message, stamps)));
    assert!(batcher.jobs().is_empty());
}
