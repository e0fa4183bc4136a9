//! The embedded SQLite key store (WAL, synchronous = FULL: a key the host reported created is on
//! disk).

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::{KeyStore, StoredAudit, StoredKey, StoredKeyring, policy_version, signed, unsigned};
use crate::Error;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keyrings (
    keyring_id  TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    admins      BLOB NOT NULL,
    admins_seal BLOB NOT NULL,
    created_at  INTEGER NOT NULL DEFAULT (unixepoch())
);
CREATE TABLE IF NOT EXISTS keys (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id      TEXT NOT NULL UNIQUE,
    keyring_id  TEXT NOT NULL REFERENCES keyrings (keyring_id),
    public_key  BLOB NOT NULL,
    policy      BLOB NOT NULL,
    label       TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    info        BLOB NOT NULL,
    created_at  INTEGER NOT NULL DEFAULT (unixepoch()),
    revision    INTEGER NOT NULL DEFAULT 0,
    policy_version INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS keys_revision ON keys (revision);
CREATE TABLE IF NOT EXISTS audit_entries (
    position  INTEGER PRIMARY KEY AUTOINCREMENT,
    boot_id   BLOB NOT NULL,
    sequence  INTEGER NOT NULL,
    entry     BLOB NOT NULL,
    signature BLOB NOT NULL,
    UNIQUE (boot_id, sequence)
);
CREATE TABLE IF NOT EXISTS audit_boots (
    boot_id  BLOB PRIMARY KEY,
    document BLOB NOT NULL
);
";

/// From version 2: revisions (in insertion order) and policy versions for the stored rows.
const MIGRATE_2_TO_3: &str = "
ALTER TABLE keys ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN policy_version INTEGER NOT NULL DEFAULT 0;
UPDATE keys SET revision = position;
";

/// The next revision, inside the statement that writes it (one connection writes at a time).
const NEXT_REVISION: &str = "(SELECT COALESCE(MAX(revision), 0) + 1 FROM keys)";

/// Schema version (`PRAGMA user_version`). Version 2 added keyring admin sets (stores of version
/// 1 have keyrings without one, which the enclave refuses, so they are not migrated); version 3
/// added revisions, policy versions and the audit trail, migrated from 2.
const SCHEMA_VERSION: i64 = 3;

/// SQLite-backed [`KeyStore`].
#[derive(Debug)]
pub struct SqliteStore {
    connection: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed, readable by this user only) the database at `path`. SQLite
    /// gives its WAL and shared-memory files the database file's mode.
    ///
    /// # Errors
    /// [`Error::Store`] if it cannot be opened or migrated; [`Error::Io`] if it cannot be
    /// created.
    pub fn open(path: &Path) -> Result<Self, Error> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        mode = format!("{:o}", mode & 0o777),
                        "the key store is readable by other users: chmod 600 it"
                    );
                }
            }
            Err(e) => return Err(e.into()),
        }
        let connection = Connection::open(path)?;
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = connection.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let has_tables: bool = connection.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'keyrings')",
            [],
            |r| r.get(0),
        )?;
        if has_tables && version == 2 {
            let transaction = connection.unchecked_transaction()?;
            transaction.execute_batch(MIGRATE_2_TO_3)?;
            transaction.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            transaction.commit()?;
            tracing::info!("key store migrated from schema version 2 to 3");
        } else if has_tables && version != SCHEMA_VERSION {
            return Err(Error::StoreState(format!(
                "key store schema version {version}, this host needs {SCHEMA_VERSION}: \
                 keyrings made before admin sets existed cannot be opened; use a new store"
            )));
        }
        connection.execute_batch(SCHEMA)?;
        connection.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        // Every statement is a single transaction; a panic cannot leave a half-written row.
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeyStore for SqliteStore {
    fn keyrings(&self) -> Result<Vec<StoredKeyring>, Error> {
        let connection = self.connection();
        let mut statement = connection.prepare_cached(
            "SELECT keyring_id, provider, wrapped_key, admins, admins_seal FROM keyrings ORDER BY rowid",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(StoredKeyring {
                keyring_id: row.get(0)?,
                provider: row.get(1)?,
                wrapped_key: row.get(2)?,
                admins: row.get(3)?,
                admins_seal: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn insert_keyring(&self, keyring: &StoredKeyring) -> Result<(), Error> {
        self.connection().execute(
            "INSERT INTO keyrings (keyring_id, provider, wrapped_key, admins, admins_seal) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![keyring.keyring_id, keyring.provider, keyring.wrapped_key, keyring.admins, keyring.admins_seal],
        )?;
        Ok(())
    }

    fn update_key(&self, key: &StoredKey) -> Result<(), Error> {
        let version = signed(policy_version(&key.policy), "policy version")?;
        let connection = self.connection();
        let changed = connection.execute(
            &format!(
                "UPDATE keys SET policy = ?2, sealed = ?3, info = ?4, policy_version = ?7, revision = {NEXT_REVISION}
                 WHERE key_id = ?1 AND keyring_id = ?5 AND public_key = ?6 AND policy_version < ?7"
            ),
            params![key.key_id, key.policy, key.sealed, key.info, key.keyring_id, key.public_key, version],
        )?;
        if changed == 1 {
            return Ok(());
        }
        let stored = connection
            .query_row(
                "SELECT 1 FROM keys WHERE key_id = ?1 AND keyring_id = ?2 AND public_key = ?3",
                params![key.key_id, key.keyring_id, key.public_key],
                |_| Ok(()),
            )
            .optional()?;
        Err(match stored {
            Some(()) => Error::StoreConflict(key.key_id.clone()),
            None => Error::StoreState(format!("no stored key {} to update", key.key_id)),
        })
    }

    fn insert_key(&self, key: &StoredKey) -> Result<(), Error> {
        insert(&self.connection(), key)
    }

    fn label(&self, key_id: &str) -> Result<Option<String>, Error> {
        Ok(self
            .connection()
            .prepare_cached("SELECT label FROM keys WHERE key_id = ?1")?
            .query_row([key_id], |row| row.get(0))
            .optional()?)
    }

    fn keys_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, StoredKey)>, Error> {
        self.page("position", after, limit)
    }

    fn revision(&self) -> Result<u64, Error> {
        let revision: i64 = self.connection().query_row(
            "SELECT COALESCE(MAX(revision), 0) FROM keys",
            [],
            |row| row.get(0),
        )?;
        unsigned(revision, "negative revision")
    }

    fn changes_after(&self, revision: u64, limit: usize) -> Result<Vec<(u64, StoredKey)>, Error> {
        self.page("revision", revision, limit)
    }

    fn append_audit(&self, entries: &[StoredAudit]) -> Result<(), Error> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT OR IGNORE INTO audit_entries (boot_id, sequence, entry, signature) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for entry in entries {
                let sequence = signed(entry.sequence, "audit sequence")?;
                insert.execute(params![
                    entry.boot_id,
                    sequence,
                    entry.entry,
                    entry.signature
                ])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, StoredAudit)>, Error> {
        let after = signed(after, "position out of range")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let connection = self.connection();
        let mut statement = connection.prepare_cached(
            "SELECT position, boot_id, sequence, entry, signature FROM audit_entries
             WHERE position > ?1 ORDER BY position LIMIT ?2",
        )?;
        let rows = statement.query_map(params![after, limit], Self::audit_row)?;
        rows.map(|row| {
            let (position, entry) = row?;
            Ok((unsigned(position, "negative position")?, entry))
        })
        .collect()
    }

    fn last_audit(&self) -> Result<Option<StoredAudit>, Error> {
        Ok(self
            .connection()
            .query_row(
                "SELECT position, boot_id, sequence, entry, signature FROM audit_entries
                 ORDER BY position DESC LIMIT 1",
                [],
                Self::audit_row,
            )
            .optional()?
            .map(|(_, entry)| entry))
    }

    fn put_audit_boot(&self, boot_id: &[u8], document: &[u8]) -> Result<(), Error> {
        self.connection().execute(
            "INSERT OR IGNORE INTO audit_boots (boot_id, document) VALUES (?1, ?2)",
            params![boot_id, document],
        )?;
        Ok(())
    }

    fn audit_boot(&self, boot_id: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .connection()
            .query_row(
                "SELECT document FROM audit_boots WHERE boot_id = ?1",
                [boot_id],
                |row| row.get(0),
            )
            .optional()?)
    }
}

impl SqliteStore {
    fn audit_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, StoredAudit)> {
        let sequence: i64 = row.get(2)?;
        Ok((
            row.get(0)?,
            StoredAudit {
                boot_id: row.get(1)?,
                sequence: u64::try_from(sequence).unwrap_or(u64::MAX),
                entry: row.get(3)?,
                signature: row.get(4)?,
            },
        ))
    }
}

/// Inserts one key at the next revision.
fn insert(connection: &Connection, key: &StoredKey) -> Result<(), Error> {
    let version = signed(policy_version(&key.policy), "policy version")?;
    connection
        .prepare_cached(&format!(
            "INSERT INTO keys (key_id, keyring_id, public_key, policy, label, sealed, info, policy_version, revision)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, {NEXT_REVISION})"
        ))?
        .execute(params![
            key.key_id,
            key.keyring_id,
            key.public_key,
            key.policy,
            key.label,
            key.sealed,
            key.info,
            version
        ])?;
    Ok(())
}

impl SqliteStore {
    /// Adds many wallet keys in one transaction (imports and benchmarks). All or nothing.
    ///
    /// # Errors
    /// Store failures, including a duplicate id; nothing is written then.
    pub fn insert_keys(&self, keys: &[StoredKey]) -> Result<(), Error> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        for key in keys {
            insert(&transaction, key)?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// Up to `limit` keys with `column` (position or revision) above `after`, in its order.
    fn page(
        &self,
        column: &'static str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredKey)>, Error> {
        let after = signed(after, "position out of range")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let connection = self.connection();
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {column}, key_id, keyring_id, public_key, policy, label, sealed, info
             FROM keys WHERE {column} > ?1 ORDER BY {column} LIMIT ?2"
        ))?;
        let rows = statement.query_map(params![after, limit], |row| {
            let position: i64 = row.get(0)?;
            Ok((
                position,
                StoredKey {
                    key_id: row.get(1)?,
                    keyring_id: row.get(2)?,
                    public_key: row.get(3)?,
                    policy: row.get(4)?,
                    label: row.get(5)?,
                    sealed: row.get(6)?,
                    info: row.get(7)?,
                },
            ))
        })?;
        rows.map(|row| {
            let (position, key) = row?;
            Ok((unsigned(position, "negative position")?, key))
        })
        .collect()
    }

    /// Whether a key id is stored (used by tests and tooling).
    ///
    /// # Errors
    /// Store failures.
    pub fn contains_key(&self, key_id: &str) -> Result<bool, Error> {
        Ok(self
            .connection()
            .query_row("SELECT 1 FROM keys WHERE key_id = ?1", [key_id], |_| Ok(()))
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> StoredKey {
        StoredKey {
            key_id: format!("k-{n:032x}"),
            keyring_id: "kr-1".into(),
            public_key: vec![2; 33],
            policy: vec![],
            label: format!("key {n}"),
            sealed: vec![n; 61],
            info: vec![n],
        }
    }

    use prost::Message as _;
    use signer_proto::pb;

    #[test]
    fn round_trips_and_pages_in_order_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.sqlite3");
        {
            let store = SqliteStore::open(&path).unwrap();
            let ring = StoredKeyring {
                keyring_id: "kr-1".into(),
                provider: "local".into(),
                wrapped_key: vec![1, 2, 3],
                admins: vec![4],
                admins_seal: vec![5],
            };
            store.insert_keyring(&ring).unwrap();
            assert!(store.insert_keyring(&ring).is_err(), "duplicate keyring");
            for n in 0..25 {
                store.insert_key(&key(n)).unwrap();
            }
            assert!(store.insert_key(&key(3)).is_err(), "duplicate key");
            let orphan = StoredKey {
                keyring_id: "kr-unknown".into(),
                ..key(99)
            };
            assert!(
                store.insert_key(&orphan).is_err(),
                "foreign key to keyrings"
            );
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.keyrings().unwrap().len(), 1);
        let mut after = 0;
        let mut seen = Vec::new();
        loop {
            let page = store.keys_after(after, 10).unwrap();
            let Some((last, _)) = page.last() else { break };
            after = *last;
            seen.extend(page.into_iter().map(|(_, k)| k));
        }
        assert_eq!(seen, (0..25).map(key).collect::<Vec<_>>());
        assert!(store.contains_key(&key(7).key_id).unwrap());
        assert_eq!(
            store.label(&key(7).key_id).unwrap().as_deref(),
            Some("key 7")
        );
        assert_eq!(store.label("k-nope").unwrap(), None);
        assert!(!store.contains_key("k-nope").unwrap());
        assert_eq!(store.keyrings().unwrap()[0].admins_seal, vec![5]);

        let changed = StoredKey {
            policy: pb::Policy {
                version: 2,
                ..pb::Policy::default()
            }
            .encode_to_vec(),
            sealed: vec![9; 61],
            info: vec![9],
            ..key(7)
        };
        store.update_key(&changed).unwrap();
        let (_, stored) = store.keys_after(7, 1).unwrap().remove(0);
        assert_eq!(stored, changed);
        let other_public = StoredKey {
            public_key: vec![3; 33],
            ..changed.clone()
        };
        assert!(
            store.update_key(&other_public).is_err(),
            "only the same key"
        );
        assert!(
            matches!(store.update_key(&changed), Err(Error::StoreConflict(_))),
            "the same version again"
        );
        assert!(
            matches!(store.update_key(&key(200)), Err(Error::StoreState(_))),
            "unknown key"
        );
        // The update moved key 7 to the newest revision.
        let revision = store.revision().unwrap();
        assert_eq!(revision, 26);
        let changes = store.changes_after(24, 10).unwrap();
        let ids: Vec<_> = changes.iter().map(|(_, k)| k.key_id.clone()).collect();
        assert_eq!(ids, [key(24).key_id, key(7).key_id]);
    }

    #[test]
    fn refuses_a_store_of_another_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.sqlite3");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 1)
            .unwrap();
        assert!(matches!(
            SqliteStore::open(&path),
            Err(Error::StoreState(_))
        ));
    }
}
