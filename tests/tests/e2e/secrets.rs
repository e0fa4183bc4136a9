//! The host never holds a secret: not in its memory, its database or its logs.
//!
//! The test plays the enclave's side to learn the secrets (it reads the local provider's master
//! key, which only a development stack has, unwraps the keyring and opens every sealed record),
//! then searches the running host process's memory, the key store's files and the log for them.

use signer_enclave::ids::{KeyId, KeyringId};
use signer_enclave::provider::KeyWrapper as _;
use signer_enclave::provider::local::LocalProvider;
use signer_enclave::seal::{self, Binding};
use tests::Stack;

/// Every readable region of a process's memory, concatenated.
pub(super) fn process_memory(pid: u32) -> Vec<u8> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut all = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let (start, end) = (
            u64::from_str_radix(start, 16).unwrap(),
            u64::from_str_radix(end, 16).unwrap(),
        );
        let mut region = vec![0u8; usize::try_from(end - start).unwrap()];
        if mem.seek(SeekFrom::Start(start)).is_ok() && mem.read_exact(&mut region).is_ok() {
            all.extend_from_slice(&region);
        }
    }
    all
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keyring_key_or_wallet_secret_in_the_host() {
    let stack = Stack::start("k256").await;
    let client = stack.client().await;
    let mut keys = Vec::new();
    for i in 0..5 {
        let key = client
            .create_key(&stack.keyring(), &format!("scan {i}"))
            .await
            .unwrap();
        client.sign_digest(&key.key_id, [9; 32]).await.unwrap();
        keys.push(key);
    }
    // Also restart the enclave once, so the host has streamed every record back into it.
    stack.kill_enclave();
    stack
        .client()
        .await
        .sign_digest(&keys[0].key_id, [9; 32])
        .await
        .unwrap();

    // The enclave's side: unwrap the keyring and open every record.
    let db = rusqlite::Connection::open(stack.database()).unwrap();
    let (keyring_id, wrapped): (String, Vec<u8>) = db
        .query_row("SELECT keyring_id, wrapped_key FROM keyrings", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let keyring_id = KeyringId::parse(&keyring_id).unwrap();
    let provider = LocalProvider::open(&stack.dir.path().join("master.key"), false).unwrap();
    let keyring_key = provider.unwrap(&keyring_id, &wrapped).await.unwrap();
    let mut secrets = vec![keyring_key.expose_secret().to_vec()];
    let mut rows = db
        .prepare("SELECT key_id, public_key, policy, sealed FROM keys")
        .unwrap();
    type Row = (String, Vec<u8>, Vec<u8>, Vec<u8>);
    let records: Vec<Row> = rows
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(records.len(), 5);
    for (key_id, public_key, policy, sealed) in records {
        let key_id = KeyId::parse(&key_id).unwrap();
        let public_key: [u8; 33] = public_key.try_into().unwrap();
        let policy_hash = seal::policy_hash(&policy);
        let binding = Binding {
            key_id: &key_id,
            keyring_id: &keyring_id,
            public_key: &public_key,
            policy_hash: &policy_hash,
        };
        secrets.push(
            seal::open(&keyring_key, &binding, &sealed)
                .unwrap()
                .expose_secret()
                .to_vec(),
        );
    }
    drop(rows);
    drop(db);

    // Where the host keeps things: its memory, its database files, its log.
    let memory = process_memory(stack.host_pid());
    assert!(
        memory.len() > 1 << 20,
        "read {} bytes of host memory",
        memory.len()
    );
    let mut files = Vec::new();
    for entry in std::fs::read_dir(stack.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("keys.sqlite3") || name == "host.log" {
            files.push((name, std::fs::read(&path).unwrap()));
        }
    }
    assert!(
        files.iter().any(|(n, _)| n == "host.log")
            && files.iter().any(|(n, _)| n == "keys.sqlite3")
    );
    for secret in &secrets {
        let hex = hex::encode(secret).into_bytes();
        assert!(
            !contains(&memory, secret) && !contains(&memory, &hex),
            "a secret is in the host's memory"
        );
        for (name, bytes) in &files {
            assert!(
                !contains(bytes, secret) && !contains(bytes, &hex),
                "a secret is in {name}"
            );
        }
    }
    // The check can fail: the sealed records the host does hold are in its memory.
    let stored: Vec<u8> = rusqlite::Connection::open(stack.database())
        .unwrap()
        .query_row("SELECT sealed FROM keys LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert!(
        contains(&memory, &stored),
        "the scan would not have found what the host holds"
    );
}
