//! `bootsvc db …`: the operator's commands on the database (`crate::cli` parses them).
//!
//! - `migrate`: apply the schema migrations this bootsvc has ([`super::schema`]);
//! - `import DIR`: load a directory of records (native or Tinkerbell `Hardware`, as the
//!   inventory directory holds) with exactly `bootsvc check`'s validation and messages; a
//!   file with any problem contributes nothing, the other files are imported in one
//!   transaction. A record replaces the machine in the database that has its first MAC;
//! - `export DIR`: write every machine as `<hostname>.json` into an empty directory, which
//!   `import` (or an embedded store's `[inventory]`) reads back as it was.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::bridge::{db_err, Bridge};
use super::{machines, schema};
use crate::config::Config;
use crate::inventory::{images, load, validate, Entry};
use crate::problem::Problems;

/// A bridge with one connection, for one command: the error of a failed connection names
/// the server (never the password) and says why.
fn open(cfg: &Config) -> Result<Bridge> {
    let url = cfg.database_url()?.context("the config has no [database] section")?;
    let timeout = Duration::from_secs(cfg.database.as_ref().map_or(5, |d| d.timeout_secs));
    let b = Bridge::new(&url, 1, timeout)?;
    b.run("connecting", async { b.client().await.map(drop) })?;
    Ok(b)
}

/// How long a command's work may take (connecting is bounded by `database.timeout_secs`).
const COMMAND_LIMIT: Duration = Duration::from_secs(600);

/// `bootsvc db migrate`: what it did, in one line.
pub fn migrate(cfg: &Config) -> Result<String> {
    let b = open(cfg)?;
    let m = b.run_within("migrating", COMMAND_LIMIT, async {
        let mut c = b.client().await?;
        let client: &mut tokio_postgres::Client = &mut c;
        schema::migrate(client).await
    })?;
    Ok(if m.applied.is_empty() {
        format!("the schema is up to date (version {})", m.to)
    } else {
        format!("schema migrated from version {} to {}: applied {}", m.from, m.to, m.applied.join(", "))
    })
}

/// What `import` did.
#[derive(Debug, Default)]
pub struct Imported {
    /// Every problem, as `bootsvc check` says it.
    pub problems: Problems,
    /// Problems of the image manifests (they are not in DIR: reported, not held against it).
    pub image_problems: Problems,
    pub added: usize,
    pub replaced: usize,
    pub files: usize,
    /// Files not imported because of their problems.
    pub refused: BTreeSet<PathBuf>,
}

/// `bootsvc db import DIR`.
pub fn import(cfg: &Config, dir: &Path) -> Result<Imported> {
    if !dir.is_dir() {
        bail!("{}: not a directory of machine records", dir.display());
    }
    let mut out = Imported::default();
    let images = images::load_configured(cfg, &mut out.image_problems);
    let entries = load::read_dir(dir, &mut out.problems);
    for e in &entries {
        validate::machine(e, cfg, &images, &mut out.problems);
    }
    let b = open(cfg)?;
    b.run_within("importing", COMMAND_LIMIT, async {
        let mut c = b.client().await?;
        check_schema(&c).await?;
        let existing = machines::load(&c, None).await?;
        // Validated across records as the inventory would be after the import: the machines
        // it replaces (same first MAC) out, the imported ones in, last.
        let incoming: HashSet<_> = entries.iter().filter_map(|e| e.machine.boot_mac()).collect();
        let kept: Vec<Entry> =
            existing.into_iter().filter(|e| e.machine.boot_mac().is_none_or(|m| !incoming.contains(&m))).collect();
        let n_kept = kept.len();
        let all: Vec<Entry> = kept.into_iter().chain(entries.iter().cloned()).collect();
        for (i, p) in validate::across_each(&all) {
            if i >= n_kept {
                out.problems.0.push(p);
            }
        }
        out.refused = out.problems.iter().map(|p| p.file.clone()).collect();
        let good: Vec<&Entry> = entries.iter().filter(|e| !out.refused.contains(&e.source.file)).collect();
        out.files = good.iter().map(|e| &e.source.file).collect::<HashSet<_>>().len();
        let tx = c.transaction().await.map_err(db_err("starting the import"))?;
        for e in good {
            let from = e.source.describe();
            if machines::put(&tx, &e.machine, &from).await? {
                out.replaced += 1;
            } else {
                out.added += 1;
            }
        }
        machines::announce(&tx).await?;
        tx.commit().await.map_err(db_err("committing the import"))?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(out)
}

async fn check_schema(c: &deadpool_postgres::Client) -> Result<()> {
    let client: &tokio_postgres::Client = c;
    schema::check(client).await
}

/// `bootsvc db export DIR`: how many machines were written.
pub fn export(cfg: &Config, dir: &Path) -> Result<usize> {
    match std::fs::read_dir(dir) {
        Ok(mut d) => {
            if d.next().is_some() {
                bail!("{}: not empty; export writes into a new or empty directory", dir.display());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    let b = open(cfg)?;
    let entries = b.run_within("reading the machines", COMMAND_LIMIT, async {
        let c = b.client().await?;
        check_schema(&c).await?;
        machines::load(&c, None).await
    })?;
    let mut names = HashSet::new();
    for e in &entries {
        let m = &e.machine;
        let mut name = format!("{}.json", m.hostname);
        if !names.insert(name.clone()) {
            name = format!(
                "{}-{}.json",
                m.hostname,
                m.boot_mac().map(|x| x.to_string().replace(':', "")).unwrap_or_default()
            );
            names.insert(name.clone());
        }
        let v = m.to_record();
        let path = dir.join(&name);
        std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(entries.len())
}
