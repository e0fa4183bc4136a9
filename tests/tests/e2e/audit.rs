//! The enclave-signed audit trail, end to end: decisions become signed, chained entries that
//! the host collects and serves; an honest trail verifies across an enclave restart (the new
//! boot links to the old one's last entry), and entries deleted, reordered or edited in the
//! host's store are each reported.

use std::time::{Duration, Instant};

use prost::Message as _;
use sha2::Digest as _;
use signer_client::audit::{AuditReport, verify_trail};
use signer_client::{Client, pb};
use signer_proto::canonical::audit_entry_hash;
use tests::Stack;

/// Waits until the host serves at least `count` entries (it collects at every poll).
pub(super) async fn trail(
    client: &Client,
    count: usize,
) -> (Vec<pb::StoredAuditEntry>, Vec<pb::AuditBoot>) {
    let started = Instant::now();
    loop {
        let (entries, boots) = client.read_audit_trail().await.unwrap();
        if entries.len() >= count {
            return (entries, boots);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "only {} audit entries collected",
            entries.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) fn decoded(entries: &[pb::StoredAuditEntry]) -> Vec<pb::AuditEntry> {
    entries
        .iter()
        .map(|e| pb::AuditEntry::decode(e.signed.as_ref().unwrap().entry.as_slice()).unwrap())
        .collect()
}

async fn report(stack: &Stack, client: &Client) -> AuditReport {
    let (entries, boots) = client.read_audit_trail().await.unwrap();
    verify_trail(&entries, &boots, &stack.attestation_policy())
}

/// Runs `edit` on the host's SQLite store.
fn tamper(stack: &Stack, edit: &str) {
    tamper_with(stack, |db| db.execute_batch(edit).map(|()| 0));
}

/// Runs `edit` with a connection to the host's SQLite store.
fn tamper_with(stack: &Stack, edit: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<usize>) {
    let db = rusqlite::Connection::open(stack.database()).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    edit(&db).unwrap();
}

/// What the verifier says of unsigned entries no signature reaches.
const VOUCHES: &str = "no signature vouches";

/// The verifier's report on the stored trail, which must name a problem `matching`.
async fn reported(stack: &Stack, client: &Client, matching: impl Fn(&str) -> bool) -> AuditReport {
    let found = report(stack, client).await;
    assert!(found.problems.iter().any(|p| matching(p)), "{found:?}");
    found
}

/// Flips the low bit of the last byte of the stored entry at `position`.
fn flip_last_byte(stack: &Stack, position: u64) {
    let db = rusqlite::Connection::open(stack.database()).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let position = i64::try_from(position).unwrap();
    let mut entry: Vec<u8> = db
        .query_row(
            "SELECT entry FROM audit_entries WHERE position = ?1",
            [position],
            |row| row.get(0),
        )
        .unwrap();
    *entry.last_mut().unwrap() ^= 1;
    db.execute(
        "UPDATE audit_entries SET entry = ?1 WHERE position = ?2",
        rusqlite::params![entry, position],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_signed_chained_and_tampering_is_reported() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await; // boot, CreateKeyring
    let key = client
        .create_key(&stack.keyring(), "audited")
        .await
        .unwrap();
    client.sign_digest(&key.key_id, [1; 32]).await.unwrap();
    client.sign_schnorr(&key.key_id, b"two").await.unwrap();
    // A refusal: an approver the policy does not name.
    let stranger = stack
        .client_with(Some(tests::stamper(&[
            &signer_client::ApiKeyPair::generate(signer_client::ApiKeyScheme::Ed25519).unwrap(),
        ])))
        .await;
    assert!(stranger.sign_digest(&key.key_id, [2; 32]).await.is_err());

    let (entries, _) = trail(&client, 6).await;
    let actions: Vec<_> = decoded(&entries)
        .iter()
        .map(|e| (e.action(), e.outcome.clone()))
        .collect();
    assert_eq!(
        actions[..6],
        [
            (pb::AuditAction::Boot, "ok".to_owned()),
            (pb::AuditAction::CreateKeyring, "ok".to_owned()),
            (pb::AuditAction::CreateKey, "ok".to_owned()),
            (pb::AuditAction::Sign, "ok".to_owned()),
            (pb::AuditAction::Sign, "ok".to_owned()),
            (pb::AuditAction::Sign, "PermissionDenied".to_owned()),
        ]
    );
    let sign = &decoded(&entries)[3];
    assert_eq!(sign.subject, key.key_id);
    assert_eq!(sign.policy_version, 1);
    let admin = sha2::Sha256::digest(stack.admin_key().public().encode_to_vec()).to_vec();
    assert_eq!(sign.approvers, [admin]);
    assert_eq!(
        decoded(&entries)[2].subject,
        key.key_id,
        "the new key is named"
    );
    let honest = report(&stack, &client).await;
    assert!(honest.intact(), "{honest:?}");
    assert_eq!(honest.boots.len(), 1);

    // The enclave restarts: the new boot links to the last entry of the first.
    let before_restart = entries.len();
    stack.kill_enclave();
    stack.wait_serving().await;
    client.sign_digest(&key.key_id, [3; 32]).await.unwrap();
    let (entries, _) = trail(&client, before_restart + 2).await;
    let honest = report(&stack, &client).await;
    assert!(honest.intact(), "{honest:?}");
    assert_eq!(honest.boots.len(), 2);
    let first = &honest.boots[0];
    assert_eq!(
        honest.boots[1].links_to,
        Some((first.boot_id.clone(), first.last_sequence))
    );
    let cli = tokio::task::block_in_place(|| stack.cli(&["audit", "verify"])).unwrap();
    assert_eq!(cli["problems"], serde_json::json!([]));
    assert_eq!(cli["boots"].as_array().unwrap().len(), 2);

    // Two entries swapped in the store: reported as out of order.
    let swap = "BEGIN;
                UPDATE audit_entries SET position = 1000000000 WHERE position = 4;
                UPDATE audit_entries SET position = 4 WHERE position = 5;
                UPDATE audit_entries SET position = 5 WHERE position = 1000000000;
                COMMIT;";
    tamper(&stack, swap);
    let found = report(&stack, &client).await;
    assert!(
        found.problems.iter().any(|p| p.contains("reordered")),
        "{found:?}"
    );
    tamper(&stack, swap);
    assert!(report(&stack, &client).await.intact());

    // A deleted entry in the middle of a boot: a gap.
    tamper(&stack, "DELETE FROM audit_entries WHERE position = 3");
    let found = report(&stack, &client).await;
    assert!(
        found
            .problems
            .iter()
            .any(|p| p.contains("missing (deleted entries)")),
        "{found:?}"
    );

    // The first boot's last entry deleted: the second boot links to an entry that is gone.
    let last_of_first = entries
        .iter()
        .zip(decoded(&entries))
        .filter(|(_, e)| hex::encode(&e.boot_id) == first.boot_id)
        .map(|(stored, _)| stored.position)
        .max()
        .unwrap();
    tamper(
        &stack,
        &format!("DELETE FROM audit_entries WHERE position = {last_of_first}"),
    );
    let found = report(&stack, &client).await;
    assert!(
        found
            .problems
            .iter()
            .any(|p| p.contains("links to an entry the trail does not hold")),
        "{found:?}"
    );
}

/// The enclave signs the last entry of each collection; the chain carries that signature back to
/// the others. An edited unsigned entry, an unsigned entry the store appends and a signature the
/// store strips are each reported, as is an edited signed entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_signature_reached_through_the_chain_vouches_for_an_entry() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let key = client.create_key(&stack.keyring(), "burst").await.unwrap();
    // A burst of decisions: the host collects several at once.
    for n in 0..20 {
        client.sign_digest(&key.key_id, [10 + n; 32]).await.unwrap();
    }
    let (entries, _) = trail(&client, 23).await;
    assert!(report(&stack, &client).await.intact());
    let signed =
        |stored: &pb::StoredAuditEntry| !stored.signed.as_ref().unwrap().signature.is_empty();
    let newest = entries.last().unwrap();
    assert!(signed(newest), "a collection ends signed");
    let inner = &entries[..entries.len() - 1];
    let signed_at = inner.iter().find(|s| signed(s)).unwrap().position;
    let unsigned_at = inner
        .iter()
        .find(|s| !signed(s))
        .expect("twenty decisions in one collection interval leave unsigned entries")
        .position;

    // An edited signed entry (one byte of the stored bytes): its signature no longer verifies.
    flip_last_byte(&stack, signed_at);
    reported(&stack, &client, |p| {
        p.contains(&format!("position {signed_at}:")) && p.contains("signature")
    })
    .await;
    let failed = tokio::task::block_in_place(|| stack.cli(&["audit", "verify"])).unwrap_err();
    assert!(
        failed["error"].as_str().unwrap().contains("not intact"),
        "{failed}"
    );
    flip_last_byte(&stack, signed_at);
    assert!(report(&stack, &client).await.intact());

    // An edited unsigned entry: the entry after it no longer chains to it, and no signature
    // vouches for it any more.
    flip_last_byte(&stack, unsigned_at);
    let next = unsigned_at + 1;
    let found = reported(&stack, &client, |p| {
        p.contains(&format!("position {next}:")) && p.contains("does not chain")
    })
    .await;
    assert!(
        found.problems.iter().any(|p| p.contains(VOUCHES)),
        "{found:?}"
    );
    flip_last_byte(&stack, unsigned_at);
    assert!(report(&stack, &client).await.intact());

    // The store appends an entry of its own after the newest one, chained correctly but
    // unsigned (it cannot sign).
    let newest_entry = decoded(&entries).pop().unwrap();
    let forged = pb::AuditEntry {
        sequence: newest_entry.sequence + 1,
        previous_hash: audit_entry_hash(&newest.signed.as_ref().unwrap().entry).to_vec(),
        time_ms: newest_entry.time_ms + 1,
        body_hash: vec![0xee; 32],
        ..newest_entry
    };
    tamper_with(&stack, |db| {
        db.execute(
            "INSERT INTO audit_entries (boot_id, sequence, entry, signature) VALUES (?1, ?2, ?3, x'')",
            rusqlite::params![
                forged.boot_id,
                i64::try_from(forged.sequence).unwrap(),
                forged.encode_to_vec()
            ],
        )
    });
    reported(&stack, &client, |p| p.contains(VOUCHES)).await;
    let position = i64::try_from(newest.position).unwrap();
    tamper_with(&stack, |db| {
        db.execute("DELETE FROM audit_entries WHERE position > ?1", [position])
    });
    assert!(report(&stack, &client).await.intact());

    // The newest entry's signature stripped: nothing vouches for its collection.
    tamper_with(&stack, |db| {
        db.execute(
            "UPDATE audit_entries SET signature = x'' WHERE position = ?1",
            [position],
        )
    });
    reported(&stack, &client, |p| p.contains(VOUCHES)).await;
}
