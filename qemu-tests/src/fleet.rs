//! A lab with two bootsvc instances on one PostgreSQL (issue 12's fleet): instance A at
//! 192.0.2.1 on the lab's bridge (the lab's own site), instance B at 192.0.2.2 in a
//! namespace of its own joined to the bridge by a veth. Each has its own state directory and
//! serves the same TFTP root, artifacts and images; both have `[database]` on one throwaway
//! cluster (`osie_testkit::postgres`), reservation-mode DHCP, and `[http] peers` naming the
//! other, so the iPXE script either renders gives the installer both URLs.
//!
//! The machine records go into the database with `bootsvc db import` (after `db migrate`)
//! before either instance starts. B's directory lies inside the lab's, so its log is kept
//! with the lab's logs; PostgreSQL's log is written there too when the lab keeps its logs.

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use osie_testkit::postgres::Postgres;
use osie_testkit::site::config::Database;
use osie_testkit::site::{self, Dir, Launch, Site};

use crate::record::Record;
use crate::signals;

/// Instance B's address.
pub const PEER: &str = "192.0.2.2";
pub const PEER_URL: &str = "http://192.0.2.2:8080";
/// The database both instances use.
pub const DB: &str = "osie";

/// What a fleet lab adds to the lab: the second instance and the database.
pub struct Fleet {
    // Field order is drop order: B before the database.
    pub peer: Site,
    pub pg: Postgres,
    /// Which instances were killed on purpose (A, B): not an error when they are gone.
    killed: [Cell<bool>; 2],
}

impl Fleet {
    /// The database, B's config (A's with B's address, interface and peers), not started.
    /// `a` is A's config (already on the database); `lab_dir` the lab's directory.
    pub fn new(test: &str, bin: &Path, a: &site::Config, lab_dir: &Path) -> Result<Option<Fleet>> {
        let Some(pg) = Postgres::start(test) else { return Ok(None) };
        pg.create_database(DB)?;
        let dir = lab_dir.join("b");
        std::fs::create_dir_all(dir.join(&a.inventory_dir)).with_context(|| format!("creating {}", dir.display()))?;
        let mut c = a.clone();
        c.address = PEER.parse().context("PEER is an address")?;
        c.http.listen = std::net::SocketAddrV4::new(c.address, c.http.listen.port());
        c.http.public_url = PEER_URL.into();
        c.http.peers = vec![a.http.public_url.clone()];
        let launch = Launch { prepare: Some(signals::guard_child), ..Launch::new(bin) };
        let peer = Site::new(launch, Dir::Kept(dir), c)?;
        Ok(Some(Fleet { peer, pg, killed: Default::default() }))
    }

    /// The database's URL (password included), for `[database]`.
    pub fn database(pg: &Postgres) -> Database {
        Database::new(&pg.url(DB))
    }

    /// `bootsvc db migrate` and `bootsvc db import` of `records` through instance `a`'s
    /// config, as an operator sets up the database.
    pub fn import(a: &Site, records: &[Record], gateway: &str) -> Result<()> {
        let dir = a.path("import");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for r in records {
            let path = dir.join(format!("{}.json", r.hostname));
            std::fs::write(&path, serde_json::to_string_pretty(&r.to_json(gateway))?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        a.admin_cli(&["db", "migrate"]).context("bootsvc db migrate")?;
        let d = dir.to_string_lossy().into_owned();
        a.admin_cli(&["db", "import", &d]).context("bootsvc db import")?;
        Ok(())
    }

    /// SIGKILL instance `i` (0: A, 1: B); `a` is the lab's own site.
    pub fn kill9(&self, a: &Site, i: usize) {
        self.killed[i].set(true);
        if i == 0 {
            a.kill9()
        } else {
            self.peer.kill9()
        }
    }

    pub fn killed(&self, i: usize) -> bool {
        self.killed[i].get()
    }

    /// An error when an instance not killed on purpose is gone.
    pub fn check_running(&self, a: &Site) -> Result<()> {
        for (i, s) in [a, &self.peer].into_iter().enumerate() {
            if !self.killed(i) {
                s.check_running().with_context(|| format!("instance {}", name(i)))?;
            }
        }
        Ok(())
    }

    /// The first instance still running (for the admin API); an error when none is.
    pub fn admin<'s>(&'s self, a: &'s Site) -> Result<&'s Site> {
        match (self.killed(0), self.killed(1)) {
            (false, _) => Ok(a),
            (true, false) => Ok(&self.peer),
            (true, true) => bail!("both instances were killed"),
        }
    }

    /// `SELECT …` in the shared database, psql's unaligned output.
    pub fn sql(&self, query: &str) -> Result<String> {
        self.pg.psql(DB, query)
    }

    /// Wait until B answers its admin API too.
    pub fn start_peer(&self) -> Result<()> {
        self.peer.start()?;
        osie_testkit::wait_for("instance B's admin API", Duration::from_secs(30), || {
            self.peer.admin_cli(&["machines", "--json"]).ok()
        })
        .map(drop)
        .with_context(|| format!("instance B's log:\n{}", site::tail(&self.peer.logs(), 20)))
    }
}

/// `A` or `B`.
pub fn name(i: usize) -> &'static str {
    if i == 0 {
        "A (192.0.2.1)"
    } else {
        "B (192.0.2.2)"
    }
}
