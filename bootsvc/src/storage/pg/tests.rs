//! The PostgreSQL storage against a real server (a throwaway cluster from
//! `osie_testkit::postgres`): the pool keeps the embedded pool's rules, two instances on one
//! database store an event once and see each other's writes through the notifications.

use std::sync::Arc;
use std::time::{Duration, Instant};

use osie_api::{Event, MacAddr, Phase};
use osie_testkit::postgres::Postgres;

use super::*;
use crate::inventory::load::parse_file;
use crate::inventory::Backend;
use crate::storage::leases::rules;

/// A migrated database `db` in `pg`, and a bridge to it.
fn migrated(pg: &Postgres, db: &str) -> Arc<Bridge> {
    pg.create_database(db).unwrap();
    let b = Arc::new(Bridge::new(&pg.url(db), 4, Duration::from_secs(10)).unwrap());
    b.run("migrating", async {
        let mut c = b.client().await?;
        let client: &mut tokio_postgres::Client = &mut c;
        schema::migrate(client).await
    })
    .unwrap();
    b
}

#[test]
fn the_pool_keeps_its_rules_in_postgres() {
    let Some(pg) = Postgres::start("the_pool_keeps_its_rules_in_postgres") else { return };
    let b = migrated(&pg, "rules");
    let n = std::sync::atomic::AtomicU32::new(0);
    // Each rule on a pool of its own: a site of its own.
    let make = |p: crate::config::Pool| -> Box<dyn LeasePool> {
        let site = format!("site{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        Box::new(PgLeases::new(Arc::clone(&b), &site, Some(&p)).unwrap())
    };
    rules::offers_distinct_addresses_and_skips_taken_ones(&make);
    rules::ack_release_decline(&make);
    rules::early_renewals_keep_the_stored_lease(&make);
    rules::expired_leases_are_reused_last(&make);
}

/// An instance's config on database `db`, with its own state directory (its spool) in
/// `state`.
fn config(pg: &Postgres, db: &str, state: &tempfile::TempDir) -> Arc<Config> {
    let mut c = crate::config::sample();
    c.inventory = None;
    c.state.dir = state.path().to_path_buf();
    c.database = Some(crate::config::Database {
        url: Some(pg.url_without_password(db)),
        url_file: None,
        max_connections: 4,
        timeout_secs: 10,
        site: None,
    });
    Arc::new(c)
}

fn event(mac: MacAddr, phase: Phase, run: &str, seq: u64) -> Event {
    Event {
        machine: mac,
        phase,
        progress: None,
        message: String::new(),
        time: "2026-01-01T00:00:00Z".into(),
        run_id: Some(run.into()),
        seq: Some(seq),
        error: vec![],
        hardware: None,
        erase: None,
    }
}

/// Poll `f` until it holds (at most 2 s, the issue's bound for `reinstall`); how long it took.
fn within_2s(what: &str, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(2), "{what}: not within 2 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

#[test]
fn two_instances_share_machines_state_and_events() {
    let Some(pg) = Postgres::start("two_instances_share_machines_state_and_events") else { return };
    let b = migrated(&pg, "shared");
    let (sa, sz) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = PgStorage::open(config(&pg, "shared", &sa), &pg.url("shared")).unwrap();
    let z = PgStorage::open(config(&pg, "shared", &sz), &pg.url("shared")).unwrap();
    assert!(a.snapshot().is_empty());

    // A machine added (as `db import` does) appears in both.
    let mut p = Problems::default();
    let e = parse_file(
        std::path::Path::new("m1.json"),
        r#"{"hostname":"m1","macs":["52:54:00:00:00:01","52:54:00:00:00:02"],"ip":{"address":"192.0.2.10","prefix":24},"netboot":{"allow":true},"install":{"image":{"url":"http://192.0.2.1:8080/images/x.raw","sha256":"0000000000000000000000000000000000000000000000000000000000000000"}}}"#,
        &mut p,
    );
    assert!(p.is_empty(), "{p}");
    b.run("adding", async {
        let mut c = b.client().await?;
        let tx = c.transaction().await?;
        machines::put(&tx, &e[0].machine, "m1.json").await?;
        machines::announce(&tx).await?;
        tx.commit().await?;
        Ok(())
    })
    .unwrap();
    let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
    let second: MacAddr = "52:54:00:00:00:02".parse().unwrap();
    within_2s("the new machine on A", || a.snapshot().by_mac(&second).is_some());
    within_2s("the new machine on Z", || z.snapshot().by_mac(&second).is_some());
    assert_eq!(a.snapshot().by_mac(&mac).unwrap().source.describe(), "database (from m1.json)");
    assert!(a.netboot_allowed(&mac) && z.netboot_allowed(&mac));

    // The installer sends each event to both (as a retry through the other would): each
    // is stored once.
    let evs = [Phase::BootedInstaller, Phase::ImageStreaming, Phase::Installed];
    for (seq, ph) in evs.iter().enumerate() {
        let ev = event(mac, *ph, "run1", seq as u64);
        assert!(!a.record_event(mac, &ev, None, "t").unwrap().duplicate);
        assert!(z.record_event(mac, &ev, None, "t").unwrap().duplicate, "{ph}: Z finds it stored");
    }
    assert_eq!(z.events(&mac, 100).unwrap().len(), 3);
    // A finished install clears netboot for both instances.
    assert!(!a.netboot_allowed(&mac));
    within_2s("Z sees the install", || !z.netboot_allowed(&mac));
    // A reinstall through Z is acted on by A.
    z.reinstall(mac, "t2").unwrap();
    let took = within_2s("A sees the reinstall", || a.netboot_allowed(&second));
    eprintln!("reinstall on one instance seen by the other after {took:?}");
    // A deprovisioning through Z is served by A (its metadata says erase).
    z.deprovision(mac, "t3", false).unwrap();
    within_2s("A sees the deprovisioning", || a.state(&mac).deprovision.is_some());
    crate::storage::trace_rules::deprovisioning_until_reinstall(&a, mac);
    within_2s("Z sees the reinstall after it", || z.state(&mac).status == crate::state::Status::ReinstallPending);

    // Many events at once through both, many sent twice: each stored once, numbered
    // without gaps.
    let (a, z) = (Arc::new(a), Arc::new(z));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let (a, z) = (Arc::clone(&a), Arc::clone(&z));
            std::thread::spawn(move || {
                for seq in 0..20 {
                    let ev = event(mac, Phase::ImageStreaming, &format!("r{t}"), seq);
                    let first = if (t + seq) % 2 == 0 { &a } else { &z };
                    let other = if (t + seq) % 2 == 0 { &z } else { &a };
                    assert!(!first.record_event(mac, &ev, None, "t").unwrap().duplicate);
                    assert!(other.record_event(mac, &ev, None, "t").unwrap().duplicate);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = a.events(&mac, 1000).unwrap();
    // 3 install events, 2 of the deprovisioning, 160 here.
    assert_eq!(all.len(), 3 + 2 + 160);
    assert!(all.iter().enumerate().all(|(i, e)| e.n == i as u64), "numbered without gaps");
    within_2s("both agree on the count", || a.state(&mac).events == 165 && z.state(&mac).events == 165);

    // Removed: gone from both.
    b.run("removing", async {
        let mut c = b.client().await?;
        let tx = c.transaction().await?;
        assert_eq!(machines::remove(&tx, &second).await?.as_deref(), Some("m1"));
        machines::announce(&tx).await?;
        tx.commit().await?;
        Ok(())
    })
    .unwrap();
    within_2s("removed from Z", || z.snapshot().is_empty());
}

#[test]
fn schema_versions_are_checked() {
    let Some(pg) = Postgres::start("schema_versions_are_checked") else { return };
    pg.create_database("v").unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&pg, "v", &state);
    let e = format!("{:#}", PgStorage::open(Arc::clone(&cfg), &pg.url("v")).err().unwrap());
    assert!(e.contains("has no osie schema: run `bootsvc db migrate` first"), "{e}");
    assert!(!e.contains(&pg.password), "{e}");
    pg.psql("v", "CREATE TABLE osie_schema (version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), applied_by text NOT NULL)").unwrap();
    let e = format!("{:#}", PgStorage::open(Arc::clone(&cfg), &pg.url("v")).err().unwrap());
    assert!(e.contains("schema is version 0, older than this bootsvc's (2): run `bootsvc db migrate`"), "{e}");
    pg.psql("v", "DROP TABLE osie_schema").unwrap();
    let b = migrated(&pg, "v2");
    drop(b);
    let cfg2 = config(&pg, "v2", &state);
    assert!(PgStorage::open(Arc::clone(&cfg2), &pg.url("v2")).is_ok());
    pg.psql("v2", "INSERT INTO osie_schema VALUES (3, 'future', 'x', now(), 'test')").unwrap();
    let e = format!("{:#}", PgStorage::open(Arc::clone(&cfg2), &pg.url("v2")).err().unwrap());
    assert!(e.contains("schema is version 3, newer than this bootsvc knows (2)"), "{e}");
    pg.psql("v2", "DELETE FROM osie_schema WHERE version = 3; UPDATE osie_schema SET sha256 = 'edited'").unwrap();
    let e = format!("{:#}", PgStorage::open(cfg2, &pg.url("v2")).err().unwrap());
    assert!(e.contains("schema version 1 (initial) in the database differs from this bootsvc's migration 1"), "{e}");
}

#[test]
fn trace_and_log_keep_their_rules_in_postgres() {
    let Some(pg) = Postgres::start("trace_and_log_keep_their_rules_in_postgres") else { return };
    drop(migrated(&pg, "trace"));
    let (sa, sz) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = PgStorage::open(config(&pg, "trace", &sa), &pg.url("trace")).unwrap();
    crate::storage::trace_rules::the_trace_is_a_ring_per_machine(&a);
    crate::storage::trace_rules::log_chunks_are_bounded_deduplicated_and_evicted(&a);
    // Another instance on the same database reads the same.
    let z = PgStorage::open(config(&pg, "trace", &sz), &pg.url("trace")).unwrap();
    let k: MacAddr = "52:54:00:00:00:01".parse().unwrap();
    assert_eq!(z.steps(&k, 100).unwrap(), a.steps(&k, 100).unwrap());
    assert_eq!(z.log(&k).unwrap(), a.log(&k).unwrap());
}
