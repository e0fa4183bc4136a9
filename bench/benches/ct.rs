//! Constant-time evidence, dudect-style: for each secret-dependent operation, two classes of
//! secrets that differ in what a leaky implementation would betray, timed in random interleaving;
//! Welch's t statistic over the timing distributions (dudect-bencher, with its percentile
//! crops). |t| < 4.5 after the documented number of measurements is no evidence of a leak.
//!
//! Run: `bench/run-ct` (each test once, `SIGNER_CT_SAMPLES` measurements, default 100,000);
//! figures and the machine in `bench/RESULTS.md`. Not a timed unit test: these machines are shared and
//! noisy, and a run takes minutes.
//!
//! Classes:
//! - *hamming*: secrets with 4 bits set against uniformly random secrets;
//! - *magnitude*: small scalars (below 2^28) against large ones (n minus a small value);
//! - *equality*: keyring keys compared with themselves against keys differing in the first byte;
//! - *control*: uniformly random secrets in both classes (two pools drawn alike; for the
//!   comparison, unequal keys in both). An A/A test:
//!   whatever |t| it reaches is the harness's own floor (pool placement, frequency drift), and a
//!   class test is read against it, not against 4.5 alone.
//!
//! The message or digest is random in both classes alike; keys are prepared (public key
//! derived) before timing, so only signing is timed.
use dudect_bencher::{BenchRng, Class, CtRunner, ctbench_main};
use signer_enclave::backend::{Backend, Digest32, K256, Libsecp256k1};
use signer_enclave::secret::{KeyringKey, WalletSecret};

/// Measurements per test: `SIGNER_CT_SAMPLES`, default 100,000.
fn samples() -> usize {
    std::env::var("SIGNER_CT_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}
/// Prepared keys per class (each measurement picks one at random).
const POOL: usize = 512;
/// The group order n, big-endian.
const N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

fn random<const L: usize>() -> [u8; L] {
    let mut bytes = [0u8; L];
    getrandom::fill(&mut bytes).expect("OS RNG qed");
    bytes
}

fn coin() -> Class {
    if random::<1>()[0] & 1 == 0 {
        Class::Left
    } else {
        Class::Right
    }
}

fn index(len: usize) -> usize {
    usize::try_from(u32::from_le_bytes(random::<4>())).expect("32-bit fits qed") % len
}

/// 4 bits set, at random positions below bit 255 (so the scalar stays below n).
fn low_hamming() -> [u8; 32] {
    let mut s = [0u8; 32];
    for _ in 0..4 {
        let bit = index(255);
        s[31 - bit / 8] |= 1 << (bit % 8);
    }
    s
}

fn uniform() -> [u8; 32] {
    loop {
        let s = random::<32>();
        if s < N && s != [0; 32] {
            return s;
        }
    }
}

/// 1 ≤ k < 2^28.
fn small_k() -> u32 {
    (u32::from_le_bytes(random::<4>()) >> 4).max(1)
}

fn small() -> [u8; 32] {
    let mut s = [0u8; 32];
    s[28..].copy_from_slice(&small_k().to_be_bytes());
    s
}

/// n − k: the last 32-bit word of n (0xd0364141) exceeds 2^28, so nothing borrows beyond it.
fn large() -> [u8; 32] {
    let mut s = N;
    let tail = u32::from_be_bytes([N[28], N[29], N[30], N[31]]) - small_k();
    s[28..].copy_from_slice(&tail.to_be_bytes());
    s
}

fn pool<B: Backend>(make: fn() -> [u8; 32]) -> Vec<B::Key> {
    (0..POOL)
        .map(|_| B::load(&WalletSecret::from_bytes(&make())).expect("valid scalar qed"))
        .collect()
}

fn ecdsa<B: Backend>(runner: &mut CtRunner, left: fn() -> [u8; 32], right: fn() -> [u8; 32]) {
    let (lefts, rights) = (pool::<B>(left), pool::<B>(right));
    let inputs: Vec<(Class, usize, Digest32)> = (0..samples())
        .map(|_| (coin(), index(POOL), Digest32(random())))
        .collect();
    for (class, i, digest) in inputs {
        let key = match class {
            Class::Left => &lefts[i],
            Class::Right => &rights[i],
        };
        runner.run_one(class, || B::sign_ecdsa(key, &digest));
    }
}

fn bip340<B: Backend>(runner: &mut CtRunner, left: fn() -> [u8; 32], right: fn() -> [u8; 32]) {
    let (lefts, rights) = (pool::<B>(left), pool::<B>(right));
    let inputs: Vec<(Class, usize, [u8; 32], [u8; 32])> = (0..samples())
        .map(|_| (coin(), index(POOL), random(), random()))
        .collect();
    for (class, i, message, aux) in inputs {
        let key = match class {
            Class::Left => &lefts[i],
            Class::Right => &rights[i],
        };
        runner.run_one(class, || B::sign_schnorr(key, &message, &aux));
    }
}

fn ecdsa_k256_hamming(runner: &mut CtRunner, _: &mut BenchRng) {
    ecdsa::<K256>(runner, low_hamming, uniform);
}
fn ecdsa_k256_magnitude(runner: &mut CtRunner, _: &mut BenchRng) {
    ecdsa::<K256>(runner, small, large);
}
fn ecdsa_libsecp256k1_hamming(runner: &mut CtRunner, _: &mut BenchRng) {
    ecdsa::<Libsecp256k1>(runner, low_hamming, uniform);
}
fn ecdsa_libsecp256k1_magnitude(runner: &mut CtRunner, _: &mut BenchRng) {
    ecdsa::<Libsecp256k1>(runner, small, large);
}
fn bip340_k256_hamming(runner: &mut CtRunner, _: &mut BenchRng) {
    bip340::<K256>(runner, low_hamming, uniform);
}
fn bip340_k256_magnitude(runner: &mut CtRunner, _: &mut BenchRng) {
    bip340::<K256>(runner, small, large);
}
fn bip340_libsecp256k1_hamming(runner: &mut CtRunner, _: &mut BenchRng) {
    bip340::<Libsecp256k1>(runner, low_hamming, uniform);
}
fn bip340_libsecp256k1_magnitude(runner: &mut CtRunner, _: &mut BenchRng) {
    bip340::<Libsecp256k1>(runner, small, large);
}
fn ecdsa_k256_control(runner: &mut CtRunner, _: &mut BenchRng) {
    ecdsa::<K256>(runner, uniform, uniform);
}
fn ecdsa_libsecp256k1_control(runner: &mut CtRunner, _: &mut BenchRng) {
    ecdsa::<Libsecp256k1>(runner, uniform, uniform);
}
fn bip340_k256_control(runner: &mut CtRunner, _: &mut BenchRng) {
    bip340::<K256>(runner, uniform, uniform);
}
fn bip340_libsecp256k1_control(runner: &mut CtRunner, _: &mut BenchRng) {
    bip340::<Libsecp256k1>(runner, uniform, uniform);
}

/// Keyring keys compared, `a` against a copy of it changed in the first byte where `differs`
/// says so for the measurement's class.
fn keyring_keys(runner: &mut CtRunner, differs: fn(Class) -> bool) {
    let inputs: Vec<(Class, KeyringKey, KeyringKey)> = (0..samples())
        .map(|_| {
            let a = random::<32>();
            let class = coin();
            let mut b = a;
            if differs(class) {
                b[0] ^= 0x80;
            }
            (
                class,
                KeyringKey::from_bytes(&a),
                KeyringKey::from_bytes(&b),
            )
        })
        .collect();
    for (class, a, b) in &inputs {
        runner.run_one(*class, || a.ct_eq(b));
    }
}

/// Keyring keys (the secret the enclave compares: a keyring loaded twice must carry the same
/// key): equal against differing in the first byte, where an early-exit comparison stops.
fn keyring_key_equality(runner: &mut CtRunner, _: &mut BenchRng) {
    keyring_keys(runner, |class| matches!(class, Class::Right));
}

/// The comparison's A/A control: both classes compare keys differing in the first byte.
fn keyring_key_control(runner: &mut CtRunner, _: &mut BenchRng) {
    keyring_keys(runner, |_| true);
}

ctbench_main!(
    ecdsa_k256_hamming,
    ecdsa_k256_magnitude,
    ecdsa_libsecp256k1_hamming,
    ecdsa_libsecp256k1_magnitude,
    bip340_k256_hamming,
    bip340_k256_magnitude,
    bip340_libsecp256k1_hamming,
    bip340_libsecp256k1_magnitude,
    ecdsa_k256_control,
    ecdsa_libsecp256k1_control,
    bip340_k256_control,
    bip340_libsecp256k1_control,
    keyring_key_equality,
    keyring_key_control
);
