//! The inventory in PostgreSQL (`machines`, `machine_macs`): each record stored as its
//! validated native JSON, with the fields machines are found by (boot MAC, every MAC, fixed
//! address, instance id) as columns the database keeps unique. Writers validate first
//! (`crate::inventory::validate`, as `bootsvc check` does); the uniqueness rules catch two
//! writers racing. Every change notifies `osie_machines`, and each instance reads the table
//! again (`super::listen`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use deadpool_postgres::GenericClient;
use osie_api::MacAddr;

use super::bridge::{db_err, describe};
use crate::inventory::source::Format;
use crate::inventory::{Entry, Machine, Source};

/// Channel of inventory notifications (no payload: read the table again).
pub const CHANNEL: &str = "osie_machines";

/// Prefix of a database record's [`Source::file`]: `database (from machines/n1.json)`.
pub fn source_of(from: &str) -> Source {
    Source {
        file: PathBuf::from(format!("database (from {from})")),
        item: String::new(),
        format: Format::Native,
        origins: Vec::new(),
    }
}

/// Every machine of `site` (and the machines of no site), in the order they were added.
pub async fn load(c: &impl GenericClient, site: Option<&str>) -> Result<Vec<Entry>> {
    let rows = c
        .query(
            "SELECT record, source FROM machines WHERE $1::text IS NULL OR site IS NULL OR site = $1 ORDER BY id",
            &[&site],
        )
        .await
        .map_err(db_err("reading machines"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let from: String = r.get(1);
        let m: Machine = serde_json::from_value(r.get(0))
            .map_err(|e| anyhow!("machines: the record from {from} does not decode: {e}"))?;
        out.push(Entry { machine: Arc::new(m), source: source_of(&from) });
    }
    Ok(out)
}

/// Store `m` (from `from`), replacing the machine with the same first MAC if there is one.
/// The NICs of the machines of sites other than `site`, with their site.
pub async fn other_sites(c: &impl GenericClient, site: &str) -> Result<HashMap<MacAddr, String>> {
    let rows = c
        .query(
            "SELECT mm.mac::text, m.site FROM machine_macs mm JOIN machines m ON m.id = mm.machine_id
             WHERE m.site IS NOT NULL AND m.site <> $1",
            &[&site],
        )
        .await
        .map_err(db_err("reading other sites' machines"))?;
    let mut out = HashMap::new();
    for r in rows {
        let mac: String = r.get(0);
        if let Ok(mac) = mac.parse() {
            out.insert(mac, r.get(1));
        }
    }
    Ok(out)
}

/// The sites the database knows, each with its number of machines; `""` is the machines
/// of no site (served by every site).
pub async fn sites(c: &impl GenericClient) -> Result<Vec<(String, i64)>> {
    let rows = c
        .query("SELECT coalesce(site, ''), count(*) FROM machines GROUP BY 1 ORDER BY 1", &[])
        .await
        .map_err(db_err("reading the sites"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Its site is the record's (`None`: any). Returns whether it replaced one.
pub async fn put(c: &impl GenericClient, m: &Machine, from: &str) -> Result<bool> {
    let site = m.site.as_deref();
    let boot = m.boot_mac().ok_or_else(|| anyhow!("{}: a machine without a MAC cannot be stored", m.hostname))?;
    let del = c.prepare_cached("DELETE FROM machines WHERE boot_mac = $1::text::macaddr").await;
    let replaced = c
        .execute(&del.map_err(db_err("preparing"))?, &[&boot.to_string()])
        .await
        .map_err(db_err("replacing the machine"))?
        > 0;
    let ins = c
        .prepare_cached(
            "INSERT INTO machines (site, hostname, instance_id, boot_mac, fixed_ip, record, source, revision)
             VALUES ($1, $2, $3, $4::text::macaddr, $5, $6, $7, nextval('machines_revision')) RETURNING id",
        )
        .await
        .map_err(db_err("preparing"))?;
    let fixed = m.ip.as_ref().map(|i| IpAddr::V4(i.address));
    let record = serde_json::to_value(m)?;
    let id: i64 = c
        .query_one(&ins, &[&site, &m.hostname, &m.instance_id(), &boot.to_string(), &fixed, &record, &from])
        .await
        .map_err(|e| conflict(m, &e))?
        .get(0);
    let macs: Vec<String> = m.macs.iter().map(MacAddr::to_string).collect();
    let ins_macs = c
        .prepare_cached("INSERT INTO machine_macs (mac, machine_id) SELECT unnest($1::text[])::macaddr, $2")
        .await
        .map_err(db_err("preparing"))?;
    c.execute(&ins_macs, &[&macs, &id]).await.map_err(|e| conflict(m, &e))?;
    Ok(replaced)
}

/// Remove the machine that has `mac` among its NICs; its hostname if there was one.
pub async fn remove(c: &impl GenericClient, mac: &MacAddr) -> Result<Option<String>> {
    let row = c
        .query_opt(
            "DELETE FROM machines WHERE id = (SELECT machine_id FROM machine_macs WHERE mac = $1::text::macaddr)
             RETURNING hostname",
            &[&mac.to_string()],
        )
        .await
        .map_err(db_err("removing the machine"))?;
    Ok(row.map(|r| r.get(0)))
}

/// Tell every instance the inventory changed (delivered when the transaction commits).
pub async fn announce(c: &impl GenericClient) -> Result<()> {
    c.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await.map_err(db_err("announcing the change"))?;
    Ok(())
}

/// A change another writer's got in the way of (a uniqueness rule).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Conflict(pub String);

/// A uniqueness rule broken by a concurrent writer, said in the record's terms.
fn conflict(m: &Machine, e: &tokio_postgres::Error) -> anyhow::Error {
    let what = match e.as_db_error().and_then(|d| d.constraint()) {
        Some("machine_macs_pkey") => "one of its MACs belongs to another machine".to_string(),
        Some("machines_instance_id_key") => format!("instance id {:?} belongs to another machine", m.instance_id()),
        Some("machines_fixed_ip") => "its fixed address belongs to another machine".to_string(),
        Some("machines_boot_mac_key") => "its first MAC belongs to another machine".to_string(),
        _ => return anyhow!("storing {}: {}", m.hostname, describe(e)),
    };
    Conflict(format!("storing {}: {what}", m.hostname)).into()
}
