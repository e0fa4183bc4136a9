//! Time rules, nonce reservations, and the per-key quota.

use super::*;

const NOW: u64 = 1_800_000_000_000;

fn rules() -> TimeRules {
    TimeRules {
        window_ms: 1_000,
        future_skew_ms: 100,
        boot_skew_ms: 50,
        boot_ms: NOW - 500,
    }
}

fn owner(seed: u8) -> ApiKeyId {
    ApiKeyId::Ed25519([seed; 32])
}

#[test]
fn time_rules_window_future_skew_and_boot() {
    let rules = rules();
    assert!(rules.check(NOW, NOW).is_ok());
    assert!(rules.check(NOW + 100, NOW).is_ok());
    assert!(matches!(rules.check(NOW + 101, NOW), Err(Error::Stale(_))));
    // Before the boot by at most the boot skew.
    assert!(rules.check(NOW - 550, NOW).is_ok());
    assert!(matches!(
        rules.check(NOW - 551, NOW),
        Err(Error::Stale("body predates this enclave boot"))
    ));
    // Long after boot, the window decides.
    let later = NOW + 10_000;
    assert!(rules.check(later - 1_000, later).is_ok());
    assert!(matches!(
        rules.check(later - 1_001, later),
        Err(Error::Stale("body older than the replay window"))
    ));
    assert!(rules.check(0, NOW).is_err());
}

#[test]
fn a_committed_nonce_is_accepted_once_until_its_body_expires() {
    let guard = ReplayGuard::new(rules(), 10, 10);
    guard
        .reserve(NOW, &[1; 16], &owner(1), NOW)
        .unwrap()
        .commit();
    assert!(matches!(
        guard.reserve(NOW, &[1; 16], &owner(1), NOW + 500),
        Err(Error::Unauthenticated("nonce replayed"))
    ));
    // The same nonce under a new timestamp is still a replay while the first is remembered.
    assert!(
        guard
            .reserve(NOW + 90, &[1; 16], &owner(2), NOW + 90)
            .is_err()
    );
    guard
        .reserve(NOW, &[2; 16], &owner(1), NOW)
        .unwrap()
        .commit();
    assert_eq!(guard.len(), 2);
    // Once the first body is outside the window its nonce is forgotten, and that body itself
    // can no longer be replayed: the time rules refuse it.
    assert!(matches!(
        guard.reserve(NOW, &[1; 16], &owner(1), NOW + 1_001),
        Err(Error::Stale(_))
    ));
    guard
        .reserve(NOW + 1_001, &[3; 16], &owner(1), NOW + 1_001)
        .unwrap()
        .commit();
    assert_eq!(guard.len(), 1, "expired nonces are dropped");
}

#[test]
fn an_uncommitted_reservation_releases_its_nonce() {
    let guard = ReplayGuard::new(rules(), 10, 10);
    let held = guard.reserve(NOW, &[1; 16], &owner(1), NOW).unwrap();
    // While held, a concurrent duplicate is a replay.
    assert!(guard.reserve(NOW, &[1; 16], &owner(1), NOW).is_err());
    drop(held);
    assert!(guard.is_empty());
    // Retried after a retryable refusal, the same body goes through.
    guard
        .reserve(NOW, &[1; 16], &owner(1), NOW)
        .unwrap()
        .commit();
    // A released nonce's stale expiry slot does not remove its later reservation.
    let guard = ReplayGuard::new(rules(), 10, 10);
    drop(guard.reserve(NOW - 200, &[5; 16], &owner(1), NOW).unwrap());
    guard
        .reserve(NOW, &[5; 16], &owner(1), NOW)
        .unwrap()
        .commit();
    guard
        .reserve(NOW + 900, &[6; 16], &owner(1), NOW + 900)
        .unwrap()
        .commit();
    assert!(
        guard.reserve(NOW, &[5; 16], &owner(1), NOW + 900).is_err(),
        "still remembered after the released slot expired"
    );
}

#[test]
fn a_full_cache_refuses_rather_than_forgets() {
    let guard = ReplayGuard::new(rules(), 2, 10);
    guard
        .reserve(NOW, &[1; 16], &owner(1), NOW)
        .unwrap()
        .commit();
    guard
        .reserve(NOW, &[2; 16], &owner(2), NOW)
        .unwrap()
        .commit();
    assert!(matches!(
        guard.reserve(NOW, &[3; 16], &owner(3), NOW),
        Err(Error::ReplayCacheFull("nonce cache full"))
    ));
    assert!(
        guard.reserve(NOW, &[1; 16], &owner(1), NOW).is_err(),
        "still remembered"
    );
    guard
        .reserve(NOW + 1_001, &[3; 16], &owner(3), NOW + 1_001)
        .unwrap()
        .commit();
}

#[test]
fn one_api_key_cannot_fill_the_cache_for_everyone() {
    let guard = ReplayGuard::new(rules(), 10, 2);
    for nonce in [1, 2] {
        guard
            .reserve(NOW, &[nonce; 16], &owner(1), NOW)
            .unwrap()
            .commit();
    }
    assert!(matches!(
        guard.reserve(NOW, &[3; 16], &owner(1), NOW),
        Err(Error::ReplayCacheFull("API key's nonce quota full"))
    ));
    // Others are unaffected.
    guard
        .reserve(NOW, &[3; 16], &owner(2), NOW)
        .unwrap()
        .commit();
    // The quota frees up as the key's nonces expire.
    guard
        .reserve(NOW + 1_001, &[4; 16], &owner(1), NOW + 1_001)
        .unwrap()
        .commit();
}
