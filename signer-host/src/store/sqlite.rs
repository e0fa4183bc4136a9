//! The embedded SQLite key store (WAL, synchronous = FULL: a key the host reported created is on
//! disk).

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::{KeyStore, StoredKey, StoredKeyring};
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
    created_at  INTEGER NOT NULL DEFAULT (unixepoch())
);
";

/// Schema version (`PRAGMA user_version`). Version 2 added keyring admin sets; stores of
/// version 1 have keyrings without one, which the enclave refuses, so they are not migrated.
const SCHEMA_VERSION: i64 = 2;

/// SQLite-backed [`KeyStore`].
#[derive(Debug)]
pub struct SqliteStore {
    connection: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    ///
    /// # Errors
    /// [`Error::Store`] if it cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<Self, Error> {
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
        if has_tables && version != SCHEMA_VERSION {
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
        let changed = self.connection().execute(
            "UPDATE keys SET policy = ?2, sealed = ?3, info = ?4 WHERE key_id = ?1 AND keyring_id = ?5 AND public_key = ?6",
            params![key.key_id, key.policy, key.sealed, key.info, key.keyring_id, key.public_key],
        )?;
        if changed == 1 {
            Ok(())
        } else {
            Err(Error::StoreState(format!(
                "no stored key {} to update",
                key.key_id
            )))
        }
    }

    fn insert_key(&self, key: &StoredKey) -> Result<(), Error> {
        self.connection().execute(
            "INSERT INTO keys (key_id, keyring_id, public_key, policy, label, sealed, info) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![key.key_id, key.keyring_id, key.public_key, key.policy, key.label, key.sealed, key.info],
        )?;
        Ok(())
    }

    fn label(&self, key_id: &str) -> Result<Option<String>, Error> {
        Ok(self
            .connection()
            .prepare_cached("SELECT label FROM keys WHERE key_id = ?1")?
            .query_row([key_id], |row| row.get(0))
            .optional()?)
    }

    fn keys_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, StoredKey)>, Error> {
        let after = i64::try_from(after).map_err(|_| Error::CorruptRow("position out of range"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let connection = self.connection();
        let mut statement = connection.prepare_cached(
            "SELECT position, key_id, keyring_id, public_key, policy, label, sealed, info
             FROM keys WHERE position > ?1 ORDER BY position LIMIT ?2",
        )?;
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
            Ok((
                u64::try_from(position).map_err(|_| Error::CorruptRow("negative position"))?,
                key,
            ))
        })
        .collect()
    }
}

impl SqliteStore {
    /// Adds many wallet keys in one transaction (imports and benchmarks). All or nothing.
    ///
    /// # Errors
    /// Store failures, including a duplicate id; nothing is written then.
    pub fn insert_keys(&self, keys: &[StoredKey]) -> Result<(), Error> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO keys (key_id, keyring_id, public_key, policy, label, sealed, info) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for key in keys {
                insert.execute(params![
                    key.key_id,
                    key.keyring_id,
                    key.public_key,
                    key.policy,
                    key.label,
                    key.sealed,
                    key.info
                ])?;
            }
        }
        transaction.commit()?;
        Ok(())
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
            policy: vec![9],
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
        assert!(store.update_key(&key(200)).is_err(), "unknown key");
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
