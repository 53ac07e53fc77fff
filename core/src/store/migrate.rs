//! The schema: the SQL files of `migrations/`, embedded and applied in order at start-up.

use deadpool_postgres::Client;

use super::StoreError;

/// One file of `migrations/`.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in order; file `NNNN_name.sql` is `version: NNNN, name`.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "device_keys",
        sql: include_str!("../../../migrations/0002_device_keys.sql"),
    },
    Migration {
        version: 3,
        name: "webhooks",
        sql: include_str!("../../../migrations/0003_webhooks.sql"),
    },
    Migration {
        version: 4,
        name: "passkey_state",
        sql: include_str!("../../../migrations/0004_passkey_state.sql"),
    },
    Migration {
        version: 5,
        name: "event_replay",
        sql: include_str!("../../../migrations/0005_event_replay.sql"),
    },
    Migration {
        version: 6,
        name: "link_tokens",
        sql: include_str!("../../../migrations/0006_link_tokens.sql"),
    },
    Migration {
        version: 7,
        name: "nodes",
        sql: include_str!("../../../migrations/0007_nodes.sql"),
    },
    Migration {
        version: 8,
        name: "qr_rendered_on_fetch",
        sql: include_str!("../../../migrations/0008_qr_rendered_on_fetch.sql"),
    },
    Migration {
        version: 9,
        name: "device_changes",
        sql: include_str!("../../../migrations/0009_device_changes.sql"),
    },
];

/// Serialises migrations across every process sharing the database ("wagate:m" in ASCII).
const LOCK_KEY: i64 = 0x7761_6761_7465_3a6d;

/// Applies the migrations the database lacks, all in one transaction.
///
/// A transaction-scoped advisory lock makes a concurrent caller wait and then find everything
/// applied; a failure rolls the whole batch back.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| StoreError::db("begin the migration transaction", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| StoreError::db("take the migration lock", e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(|e| StoreError::db("create the schema_migrations table", e))?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(|e| StoreError::db("read the applied migrations", e))?
        .iter()
        .map(|row| row.get(0))
        .collect();

    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some(&found) = applied.iter().filter(|&&v| v > known).max() {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let failed = |source| StoreError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        tx.batch_execute(m.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(failed)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    tx.commit()
        .await
        .map_err(|e| StoreError::db("commit the migrations", e))
}

/// How many of [`MIGRATIONS`] the database lacks. One statement, so it also tells whether the
/// database answers; a database never migrated fails (no `schema_migrations`).
pub(super) async fn missing(client: &Client) -> Result<usize, StoreError> {
    let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    let applied: i64 = client
        .query_one(
            "SELECT count(*) FROM schema_migrations WHERE version = ANY($1)",
            &[&versions],
        )
        .await
        .map_err(|e| StoreError::db("read the applied migrations", e))?
        .get(0);
    Ok(MIGRATIONS.len().saturating_sub(applied as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations/ is readable")
            .map(|entry| entry.expect("a directory entry").file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, embedded);
        for m in MIGRATIONS {
            let path = format!("{dir}/{:04}_{}.sql", m.version, m.name);
            assert_eq!(std::fs::read_to_string(path).unwrap(), m.sql);
        }
    }

    #[test]
    fn versions_count_up_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
    }
}
