//! Versioned schema migrations, embedded in the binary (`migrations/NNNN_name.sql`).
//!
//! `osie_schema` records each applied version with the SHA-256 of its SQL. `bootsvc db
//! migrate` ([`migrate`]) applies the missing ones in one transaction, under an advisory lock
//! (two migrators never interleave; a failed migration leaves nothing behind). `serve`
//! ([`check`]) refuses a database without the schema, with an older one (run the migration)
//! or a newer one (a newer bootsvc migrated it), or one whose applied migration differs from
//! this binary's.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;

use super::bridge::db_err;

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration this bootsvc knows, oldest first, numbered 1, 2, 3…
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "initial", sql: include_str!("migrations/0001_initial.sql") },
    Migration { version: 2, name: "trace", sql: include_str!("migrations/0002_trace.sql") },
];

/// The schema version this bootsvc serves.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Key of the advisory lock migrators take.
const LOCK: i64 = 0x6f73_6965_0001;

const TABLE: &str = "CREATE TABLE IF NOT EXISTS osie_schema (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL
)";

fn sha(sql: &str) -> String {
    Sha256::digest(sql.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`migrate`] found and did.
#[derive(Debug, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
    pub applied: Vec<String>,
}

/// The versions recorded, checked against this binary's: `Ok(current version)`, or an
/// error for a newer or a different schema.
async fn applied(c: &impl GenericClient) -> Result<i32> {
    let rows = c
        .query("SELECT version, name, sha256 FROM osie_schema ORDER BY version", &[])
        .await
        .map_err(db_err("reading osie_schema"))?;
    let mut current = 0;
    for r in rows {
        let (v, name, sum): (i32, String, String) = (r.get(0), r.get(1), r.get(2));
        match MIGRATIONS.iter().find(|m| m.version == v) {
            None => bail!(
                "the database's schema is version {}, newer than this bootsvc knows ({}): a newer bootsvc \
                 migrated it; run that version (or a newer one) here",
                v.max(current),
                latest()
            ),
            Some(m) if sha(m.sql) != sum => bail!(
                "schema version {v} ({name}) in the database differs from this bootsvc's migration {v} ({}): \
                 it was changed by hand or by another build; restore it or migrate a fresh database",
                m.name
            ),
            Some(_) => current = current.max(v),
        }
    }
    Ok(current)
}

/// Apply every migration the database lacks.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Migrated> {
    let tx = client.transaction().await.map_err(db_err("starting the migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await.map_err(db_err("waiting for other migrators"))?;
    tx.batch_execute(TABLE).await.map_err(db_err("creating osie_schema"))?;
    let from = applied(&tx).await?;
    let by = format!(
        "bootsvc {} on {}",
        env!("CARGO_PKG_VERSION"),
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim()
    );
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > from) {
        tx.batch_execute(m.sql)
            .await
            .map_err(|e| anyhow::anyhow!("migration {} ({}): {}", m.version, m.name, super::bridge::describe(&e)))?;
        tx.execute(
            "INSERT INTO osie_schema (version, name, sha256, applied_by) VALUES ($1, $2, $3, $4)",
            &[&m.version, &m.name, &sha(m.sql), &by],
        )
        .await
        .map_err(db_err("recording the migration"))?;
        done.push(format!("{} ({})", m.version, m.name));
    }
    tx.commit().await.map_err(db_err("committing the migration"))?;
    Ok(Migrated { from, to: latest(), applied: done })
}

/// Refuse a database whose schema is not exactly this bootsvc's.
pub async fn check(c: &impl GenericClient) -> Result<()> {
    let exists: bool = c
        .query_one("SELECT to_regclass('osie_schema') IS NOT NULL", &[])
        .await
        .map_err(db_err("looking for osie_schema"))?
        .get(0);
    if !exists {
        bail!("the database has no osie schema: run `bootsvc db migrate` first");
    }
    let current = applied(c).await.context("checking the schema version")?;
    if current < latest() {
        bail!(
            "the database's schema is version {current}, older than this bootsvc's ({}): run `bootsvc db migrate` \
             (stop or upgrade the other instances first if they are older)",
            latest()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
            assert!(!m.sql.contains("osie_schema"), "{}: the migrator keeps osie_schema itself", m.name);
        }
        assert_eq!(latest(), MIGRATIONS.len() as i32);
    }
}
