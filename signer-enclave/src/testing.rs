//! Shared fixtures for the enclave's unit tests: API keys from fixed seeds, a wide replay guard,
//! and authorisations made through the real path (stamps verified, quorum checked, nonce
//! reserved).

use ed25519_dalek::Signer as _;
use signer_proto::pb;

use crate::auth::{Authorized, Requirement};
use crate::intake::host::StoredKeyring;
use crate::policy::{KeyPolicy, KeyringAdmins, Quorum};
use crate::replay::{ReplayGuard, TimeRules, now_ms};
use crate::vault::NewKeyring;

/// The deployment the unit tests stamp for.
pub(crate) const DEPLOYMENT: &str = "unit-test";

/// An Ed25519 API key from a fixed seed.
pub(crate) fn key(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

/// Its public half as policies name it.
pub(crate) fn api(seed: u8) -> pb::ApiKey {
    pb::ApiKey {
        scheme: pb::StampScheme::Ed25519.into(),
        public_key: key(seed).verifying_key().to_bytes().to_vec(),
    }
}

/// `seed`'s stamp over `body` for [`DEPLOYMENT`].
pub(crate) fn stamp(seed: u8, body: &[u8]) -> pb::Stamp {
    let message = signer_proto::canonical::stamp_message(DEPLOYMENT, body);
    pb::Stamp {
        scheme: pb::StampScheme::Ed25519.into(),
        public_key: key(seed).verifying_key().to_bytes().to_vec(),
        signature: key(seed).sign(&message).to_bytes().to_vec(),
    }
}

/// A guard around the real clock that accepts a minute either way and began long ago.
pub(crate) fn guard() -> ReplayGuard {
    let rules = TimeRules {
        window_ms: 60_000,
        future_skew_ms: 60_000,
        boot_skew_ms: 60_000,
        boot_ms: now_ms(),
    };
    ReplayGuard::new(rules, 1_000, 1_000)
}

/// A 1-of-1 admin set of key 1.
pub(crate) fn admins() -> KeyringAdmins {
    KeyringAdmins::parse(&pb::KeyringAdmins {
        admins: vec![api(1)],
        threshold: 1,
    })
    .expect("valid admins qed")
}

/// A policy approved by `approver`, administered by key 1, both schemes.
pub(crate) fn policy(approver: u8) -> KeyPolicy {
    KeyPolicy::parse(&pb::Policy {
        approvers: vec![api(approver)],
        threshold: 1,
        schemes: vec![1, 2],
        admins: vec![api(1)],
        admin_threshold: 1,
        ..Default::default()
    })
    .expect("valid policy qed")
}

/// A real authorisation by key 1 with a fresh nonce, under `guard`.
pub(crate) fn authorized(guard: &ReplayGuard) -> Authorized<'_> {
    let mut nonce = vec![0u8; 16];
    getrandom::fill(&mut nonce).expect("RNG qed");
    let body = pb::RequestBody {
        timestamp_ms: now_ms(),
        nonce,
        operation: Some(pb::request_body::Operation::Sign(pb::SignBody::default())),
    };
    let request = pb::SignedRequest {
        stamps: vec![stamp(1, &prost::Message::encode_to_vec(&body))],
        body: prost::Message::encode_to_vec(&body),
    };
    let quorum = Quorum::parse(&[api(1)], 1, "test").expect("valid quorum qed");
    let (received, _) =
        crate::intake::stamped::open(&request, guard.rules(), now_ms()).expect("opens qed");
    let batcher = crate::stamp::StampBatcher::default();
    let auth =
        ready(received.authenticate(DEPLOYMENT, &[&quorum], &batcher)).expect("stamps verify qed");
    let requirement = Requirement {
        quorum: &quorum,
        refusal: "test",
    };
    auth.authorize(
        &[requirement],
        guard,
        now_ms(),
        crate::audit::Note::new(audit_log(), pb::AuditAction::Sign, "", 1),
    )
    .expect("authorised qed")
}

/// An audit log for tests, signed by a throw-away identity; never collected.
pub(crate) fn audit_log() -> &'static crate::audit::AuditLog {
    static LOG: std::sync::LazyLock<crate::audit::AuditLog> = std::sync::LazyLock::new(|| {
        let boot = crate::identity::Boot {
            id: [1; 16],
            time_ms: 0,
            deployment_id: DEPLOYMENT.into(),
            config_hash: [0; 32],
        };
        let identity = crate::identity::BootIdentity::generate(boot).expect("RNG qed");
        crate::audit::AuditLog::new(std::sync::Arc::new(identity), usize::MAX)
    });
    &LOG
}

/// A created keyring as the host would store it.
pub(crate) fn stored(created: &NewKeyring) -> StoredKeyring {
    StoredKeyring {
        id: created.id,
        wrapped: created.wrapped.clone(),
        admins: created.admins.clone(),
        admins_seal: created.admins_seal.clone(),
    }
}

/// Runs a future that waits on nothing but its own yields (stamp verification: the batcher's
/// one yield, then an answer it gave itself) to its output, without a runtime.
pub(crate) fn ready<F: Future>(future: F) -> F::Output {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    let mut future = std::pin::pin!(future);
    for _ in 0..1_000 {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
    panic!("the future waits on something else");
}
