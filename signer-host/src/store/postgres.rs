//! The PostgreSQL key store that several hosts share (sqlx: a pool, versioned migrations run at
//! start-up, TLS as the URL asks, LISTEN/NOTIFY).
//!
//! Every write of a key runs in a transaction that first takes one advisory lock, so revisions
//! are taken in commit order and a follower reading "after revision r" never skips a row that
//! commits later with a smaller one. A trigger notifies channel [`CHANNEL`] when keys or keyrings
//! change; [`PgStore::follow`] turns notifications into wake-ups of the host's loader, which
//! also polls, so a notification lost across a reconnect delays a change by one poll at most.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row as _, Transaction};
use tokio::runtime::Handle;
use tokio::sync::{Notify, watch};

use super::{KeyStore, StoredAudit, StoredKey, StoredKeyring, policy_version, signed, unsigned};
use crate::Error;
use crate::shutdown::stopped;

/// The notification channel.
pub const CHANNEL: &str = "signer_store";

/// Serialises key writes (and migrations) across every host: an arbitrary constant.
const WRITE_LOCK: i64 = 0x7369_676e_6572_0001;

/// Migrations, in order; each runs once, in its own transaction, under [`WRITE_LOCK`].
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE keyrings (
        position    BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        keyring_id  TEXT PRIMARY KEY,
        provider    TEXT NOT NULL,
        wrapped_key BYTEA NOT NULL,
        admins      BYTEA NOT NULL,
        admins_seal BYTEA NOT NULL,
        created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE SEQUENCE key_revisions;
    CREATE TABLE keys (
        position       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key_id         TEXT NOT NULL UNIQUE,
        keyring_id     TEXT NOT NULL REFERENCES keyrings (keyring_id),
        public_key     BYTEA NOT NULL,
        policy         BYTEA NOT NULL,
        policy_version BIGINT NOT NULL,
        label          TEXT NOT NULL,
        sealed         BYTEA NOT NULL,
        info           BYTEA NOT NULL,
        revision       BIGINT NOT NULL UNIQUE DEFAULT nextval('key_revisions'),
        created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE FUNCTION signer_store_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('signer_store', TG_TABLE_NAME);
        RETURN NULL;
    END $$;
    CREATE TRIGGER keys_changed AFTER INSERT OR UPDATE ON keys
        FOR EACH STATEMENT EXECUTE FUNCTION signer_store_changed();
    CREATE TRIGGER keyrings_changed AFTER INSERT ON keyrings
        FOR EACH STATEMENT EXECUTE FUNCTION signer_store_changed();",
    ),
    (
        2,
        "CREATE TABLE audit_entries (
        position  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        boot_id   BYTEA NOT NULL,
        sequence  BIGINT NOT NULL,
        entry     BYTEA NOT NULL,
        signature BYTEA NOT NULL,
        UNIQUE (boot_id, sequence)
    );
    CREATE TABLE audit_boots (
        boot_id  BYTEA PRIMARY KEY,
        document BYTEA NOT NULL
    );",
    ),
];

/// Settings beyond the URL.
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    /// Most connections this host opens.
    pub max_connections: u32,
    /// Longest wait for a connection, and for any one statement.
    pub timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 8,
            timeout: Duration::from_secs(10),
        }
    }
}

/// PostgreSQL-backed [`KeyStore`].
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    runtime: Handle,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db?sslmode=verify-full&sslrootcert=…`) and
    /// runs the migrations this host knows that the database lacks.
    ///
    /// # Errors
    /// [`Error::Postgres`] for a bad URL or an unreachable database; [`Error::StoreState`] for a
    /// database migrated by a newer host.
    pub async fn connect(url: &str, settings: PoolSettings) -> Result<Self, Error> {
        let statement_timeout = format!("{}ms", settings.timeout.as_millis());
        let options = PgConnectOptions::from_str(url)?
            .application_name("signer-host")
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.timeout)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        Ok(Self {
            pool,
            runtime: Handle::current(),
        })
    }

    /// Wakes `wake` whenever another writer (or this host) changes keys or keyrings, until
    /// `shutdown` turns true. Reconnects after a lost connection, waking once then.
    pub async fn follow(&self, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
        let mut listener = None;
        loop {
            let Some(active) = listener.as_mut() else {
                match subscribe(&self.pool).await {
                    Ok(subscribed) => {
                        listener = Some(subscribed);
                        wake.notify_one();
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for key store changes; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = stopped(&mut shutdown) => return,
                        }
                    }
                }
                continue;
            };
            tokio::select! {
                received = active.try_recv() => match received {
                    Ok(Some(_)) => wake.notify_one(),
                    // Reconnected: anything sent meanwhile is lost, so look now.
                    Ok(None) => wake.notify_one(),
                    Err(error) => {
                        tracing::warn!(%error, "key store notifications interrupted");
                        listener = None;
                    }
                },
                () = stopped(&mut shutdown) => return,
            }
        }
    }

    /// Adds many wallet keys in one transaction (imports and benchmarks). All or nothing.
    ///
    /// # Errors
    /// Store failures, including a duplicate id; nothing is written then.
    pub async fn insert_keys(&self, keys: &[StoredKey]) -> Result<(), Error> {
        let mut transaction = self.write().await?;
        for key in keys {
            insert(&mut transaction, key).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// A transaction holding the write lock.
    async fn write(&self) -> Result<Transaction<'static, Postgres>, Error> {
        locked(&self.pool).await
    }

    fn run<T>(&self, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        // Called from the blocking pool (see `store::blocking`) or from outside any runtime.
        self.runtime.block_on(work)
    }

    async fn page(
        &self,
        column: Column,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StoredKey)>, Error> {
        let sql = match column {
            Column::Position => {
                "SELECT position, key_id, keyring_id, public_key, policy, label, sealed, info
                 FROM keys WHERE position > $1 ORDER BY position LIMIT $2"
            }
            Column::Revision => {
                "SELECT revision, key_id, keyring_id, public_key, policy, label, sealed, info
                 FROM keys WHERE revision > $1 ORDER BY revision LIMIT $2"
            }
        };
        let rows = sqlx::query(sql)
            .bind(signed(after, "position out of range")?)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((unsigned(row.try_get(0)?, "negative position")?, key(row)?)))
            .collect()
    }
}

/// Which order a page follows.
#[derive(Clone, Copy, Debug)]
enum Column {
    Position,
    Revision,
}

fn key(row: &PgRow) -> Result<StoredKey, sqlx::Error> {
    Ok(StoredKey {
        key_id: row.try_get(1)?,
        keyring_id: row.try_get(2)?,
        public_key: row.try_get(3)?,
        policy: row.try_get(4)?,
        label: row.try_get(5)?,
        sealed: row.try_get(6)?,
        info: row.try_get(7)?,
    })
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn insert(transaction: &mut Transaction<'_, Postgres>, key: &StoredKey) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO keys (key_id, keyring_id, public_key, policy, policy_version, label, sealed, info)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&key.key_id)
    .bind(&key.keyring_id)
    .bind(&key.public_key)
    .bind(&key.policy)
    .bind(signed(policy_version(&key.policy), "policy version")?)
    .bind(&key.label)
    .bind(&key.sealed)
    .bind(&key.info)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// A transaction holding [`WRITE_LOCK`] until it ends.
async fn locked(pool: &PgPool) -> Result<Transaction<'static, Postgres>, Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK)
        .execute(&mut *transaction)
        .await?;
    Ok(transaction)
}

/// Applies the migrations the database lacks, one host at a time.
async fn migrate(pool: &PgPool) -> Result<(), Error> {
    let mut transaction = locked(pool).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS signer_schema_migrations (
            version    INTEGER PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .execute(&mut *transaction)
    .await?;
    let applied: Option<i32> =
        sqlx::query_scalar("SELECT max(version) FROM signer_schema_migrations")
            .fetch_one(&mut *transaction)
            .await?;
    let applied = applied.unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    if applied > known {
        return Err(Error::StoreState(format!(
            "key store schema version {applied}, this host knows up to {known}: upgrade the host"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > applied) {
        sqlx::raw_sql(*sql).execute(&mut *transaction).await?;
        sqlx::query("INSERT INTO signer_schema_migrations (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *transaction)
            .await?;
        tracing::info!(version, "key store migrated");
    }
    transaction.commit().await?;
    Ok(())
}

impl KeyStore for PgStore {
    fn keyrings(&self) -> Result<Vec<StoredKeyring>, Error> {
        self.run(async {
            let rows = sqlx::query(
                "SELECT keyring_id, provider, wrapped_key, admins, admins_seal FROM keyrings ORDER BY position",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(StoredKeyring {
                        keyring_id: row.try_get(0)?,
                        provider: row.try_get(1)?,
                        wrapped_key: row.try_get(2)?,
                        admins: row.try_get(3)?,
                        admins_seal: row.try_get(4)?,
                    })
                })
                .collect()
        })
    }

    fn insert_keyring(&self, keyring: &StoredKeyring) -> Result<(), Error> {
        self.run(async {
            sqlx::query(
                "INSERT INTO keyrings (keyring_id, provider, wrapped_key, admins, admins_seal) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&keyring.keyring_id)
            .bind(&keyring.provider)
            .bind(&keyring.wrapped_key)
            .bind(&keyring.admins)
            .bind(&keyring.admins_seal)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn insert_key(&self, key: &StoredKey) -> Result<(), Error> {
        self.run(async {
            let mut transaction = self.write().await?;
            insert(&mut transaction, key).await?;
            transaction.commit().await?;
            Ok(())
        })
    }

    fn update_key(&self, key: &StoredKey) -> Result<(), Error> {
        self.run(async {
            let mut transaction = self.write().await?;
            let stored: Option<i64> = sqlx::query_scalar(
                "SELECT policy_version FROM keys WHERE key_id = $1 AND keyring_id = $2 AND public_key = $3 FOR UPDATE",
            )
            .bind(&key.key_id)
            .bind(&key.keyring_id)
            .bind(&key.public_key)
            .fetch_optional(&mut *transaction)
            .await?;
            let version = signed(policy_version(&key.policy), "policy version")?;
            match stored {
                None => {
                    return Err(Error::StoreState(format!(
                        "no stored key {} to update",
                        key.key_id
                    )));
                }
                Some(stored) if stored >= version => {
                    return Err(Error::StoreConflict(key.key_id.clone()));
                }
                Some(_) => {}
            }
            sqlx::query(
                "UPDATE keys SET policy = $2, sealed = $3, info = $4, policy_version = $5,
                     revision = nextval('key_revisions')
                 WHERE key_id = $1",
            )
            .bind(&key.key_id)
            .bind(&key.policy)
            .bind(&key.sealed)
            .bind(&key.info)
            .bind(version)
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await?;
            Ok(())
        })
    }

    fn label(&self, key_id: &str) -> Result<Option<String>, Error> {
        self.run(async {
            Ok(
                sqlx::query_scalar("SELECT label FROM keys WHERE key_id = $1")
                    .bind(key_id)
                    .fetch_optional(&self.pool)
                    .await?,
            )
        })
    }

    fn keys_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, StoredKey)>, Error> {
        self.run(self.page(Column::Position, after, limit))
    }

    fn revision(&self) -> Result<u64, Error> {
        self.run(async {
            let revision: Option<i64> = sqlx::query_scalar("SELECT max(revision) FROM keys")
                .fetch_one(&self.pool)
                .await?;
            unsigned(revision.unwrap_or(0), "negative revision")
        })
    }

    fn changes_after(&self, revision: u64, limit: usize) -> Result<Vec<(u64, StoredKey)>, Error> {
        self.run(self.page(Column::Revision, revision, limit))
    }

    fn append_audit(&self, entries: &[StoredAudit]) -> Result<(), Error> {
        self.run(async {
            let mut transaction = self.pool.begin().await?;
            for entry in entries {
                sqlx::query(
                    "INSERT INTO audit_entries (boot_id, sequence, entry, signature)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (boot_id, sequence) DO NOTHING",
                )
                .bind(&entry.boot_id)
                .bind(signed(entry.sequence, "audit sequence")?)
                .bind(&entry.entry)
                .bind(&entry.signature)
                .execute(&mut *transaction)
                .await?;
            }
            transaction.commit().await?;
            Ok(())
        })
    }

    fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, StoredAudit)>, Error> {
        self.run(async {
            let rows = sqlx::query(
                "SELECT position, boot_id, sequence, entry, signature FROM audit_entries
                 WHERE position > $1 ORDER BY position LIMIT $2",
            )
            .bind(signed(after, "position out of range")?)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| Ok((unsigned(row.try_get(0)?, "negative position")?, audit(row)?)))
                .collect()
        })
    }

    fn last_audit(&self) -> Result<Option<StoredAudit>, Error> {
        self.run(async {
            let row = sqlx::query(
                "SELECT position, boot_id, sequence, entry, signature FROM audit_entries
                 ORDER BY position DESC LIMIT 1",
            )
            .fetch_optional(&self.pool)
            .await?;
            row.as_ref().map(audit).transpose()
        })
    }

    fn put_audit_boot(&self, boot_id: &[u8], document: &[u8]) -> Result<(), Error> {
        self.run(async {
            sqlx::query(
                "INSERT INTO audit_boots (boot_id, document) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(boot_id)
            .bind(document)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn audit_boot(&self, boot_id: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.run(async {
            Ok(
                sqlx::query_scalar("SELECT document FROM audit_boots WHERE boot_id = $1")
                    .bind(boot_id)
                    .fetch_optional(&self.pool)
                    .await?,
            )
        })
    }
}

fn audit(row: &PgRow) -> Result<StoredAudit, Error> {
    Ok(StoredAudit {
        boot_id: row.try_get(1)?,
        sequence: unsigned(row.try_get(2)?, "negative audit sequence")?,
        entry: row.try_get(3)?,
        signature: row.try_get(4)?,
    })
}
