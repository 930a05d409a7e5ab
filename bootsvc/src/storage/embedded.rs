//! [`Storage`] with nothing but a directory: the machines from the inventory directory
//! (reloaded when it changes, `crate::inventory::watch`), machine state and events in
//! `state.dir/bootsvc.redb` ([`crate::state::Store`]), the pool's leases in
//! `state.dir/dhcp-leases.json` ([`LeaseStore`]) and, in proxy mode, the DHCP requests seen in
//! `state.dir/dhcp-requests.json` ([`DhcpRequests`]). The default, and what the README's
//! commands use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use osie_api::{Event, MacAddr};

use super::{ChangeError, DhcpRequests, LeasePool, LeaseStore, RequestsSeen, Storage};
use crate::config::{Config, DhcpMode};
use crate::inventory::source::Format;
use crate::inventory::{Entry, Inventory, Machine, Snapshot};
use crate::state::{MachineState, Recorded, Store, StoredEvent};
use crate::trace::log::{LogBounds, LogOutcome, LogView, StoredChunk};
use crate::trace::{StoredStep, TraceStep};

pub struct EmbeddedStorage {
    inventory: Arc<Inventory>,
    store: Store,
    leases: LeaseStore,
    requests: Arc<DhcpRequests>,
    /// The config, to write and reload the inventory directory (`None`: records cannot be
    /// changed through the storage).
    cfg: Option<Config>,
    /// Changes to the inventory directory, one at a time.
    writes: Mutex<()>,
}

impl EmbeddedStorage {
    /// Open what `cfg` names under `state.dir`: the state store always, the lease file with
    /// a pool in reservation mode, the requests seen in proxy mode (both only with DHCP on).
    pub fn open(cfg: &Config, inventory: Arc<Inventory>) -> Result<EmbeddedStorage> {
        let dir = &cfg.state.dir;
        let store = Store::open(dir)?;
        // Proxy mode hands out no addresses: no pool, no lease file.
        let leases = match (cfg.dhcp.enabled, cfg.dhcp.mode, &cfg.dhcp.pool) {
            (true, DhcpMode::Reservation, Some(pool)) => LeaseStore::open(dir, Some(pool))?,
            _ => LeaseStore::in_memory(None)?,
        };
        let requests = match (cfg.dhcp.enabled, cfg.dhcp.mode) {
            (true, DhcpMode::Proxy) => DhcpRequests::open(dir)?,
            _ => DhcpRequests::disabled(),
        };
        Ok(EmbeddedStorage { inventory, store, leases, requests, cfg: Some(cfg.clone()), writes: Mutex::new(()) })
    }

    /// From parts opened by the caller (tests: an in-memory pool, a table of their own).
    pub fn from_parts(
        inventory: Arc<Inventory>,
        store: Store,
        leases: LeaseStore,
        requests: Arc<DhcpRequests>,
    ) -> EmbeddedStorage {
        EmbeddedStorage { inventory, store, leases, requests, cfg: None, writes: Mutex::new(()) }
    }

    /// The inventory, for the reload watcher.
    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    /// The state store itself (its commit counter, for tests and figures).
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn inventory_dir(&self) -> Result<(&Config, &std::path::Path), ChangeError> {
        let cfg = self.cfg.as_ref().ok_or_else(|| anyhow!("no inventory directory to change"))?;
        let dir = cfg.inventory.as_ref().ok_or_else(|| anyhow!("no inventory directory to change"))?;
        Ok((cfg, &dir.dir))
    }

    /// The file holding `e` alone, which can be rewritten or removed.
    fn own_file(e: &Entry) -> Result<PathBuf, ChangeError> {
        if e.source.format != Format::Native || !e.source.item.is_empty() {
            return Err(ChangeError::Conflict(format!(
                "{} comes from {} (Tinkerbell `Hardware`), which bootsvc does not rewrite: edit that file",
                e.machine.hostname,
                e.source.describe()
            )));
        }
        Ok(e.source.file.clone())
    }

    /// After writing: read the directory again and serve it. Should it have problems (an
    /// edit made beside this one), `undo` puts the files back and nothing changes.
    fn reload(&self, cfg: &Config, undo: impl FnOnce()) -> Result<(), ChangeError> {
        match Snapshot::load(cfg) {
            Ok(s) => {
                self.inventory.replace(s);
                Ok(())
            }
            Err(p) => {
                undo();
                Err(ChangeError::Conflict(format!("the inventory directory has problems; nothing was changed:\n{p}")))
            }
        }
    }
}

/// Write `m` to `path` (a new file, or replacing one) so that a reader never sees half.
fn write_record(path: &std::path::Path, m: &Machine) -> Result<(), ChangeError> {
    let text = serde_json::to_string_pretty(&m.to_record()).context("encoding the record")? + "\n";
    super::leases::write_atomic(path, text.as_bytes()).map_err(|e| ChangeError::Failed(e.context("writing the record")))
}

impl Storage for EmbeddedStorage {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.inventory.snapshot()
    }

    fn state(&self, key: &MacAddr) -> MachineState {
        self.store.state(key)
    }

    fn states(&self) -> HashMap<MacAddr, MachineState> {
        self.store.all()
    }

    fn record_event(&self, key: MacAddr, ev: &Event, source: Option<std::net::IpAddr>, now: &str) -> Result<Recorded> {
        self.store.record_event(key, ev, source, now)
    }

    fn reinstall(&self, key: MacAddr, now: &str) -> Result<MachineState> {
        self.store.reinstall(key, now)
    }

    fn deprovision(&self, key: MacAddr, now: &str, removable: bool) -> Result<MachineState> {
        self.store.deprovision(key, now, removable)
    }

    fn events(&self, key: &MacAddr, limit: usize) -> Result<Vec<StoredEvent>> {
        self.store.events(key, limit)
    }

    fn record_steps(&self, steps: &[(MacAddr, TraceStep)], keep: usize) -> Result<()> {
        self.store.record_steps(steps, keep)
    }

    fn steps(&self, key: &MacAddr, limit: usize) -> Result<Vec<StoredStep>> {
        self.store.steps(key, limit)
    }

    fn record_log(&self, key: MacAddr, chunk: &StoredChunk, bounds: &LogBounds) -> Result<LogOutcome> {
        self.store.record_log(key, chunk, bounds)
    }

    fn log(&self, key: &MacAddr) -> Result<LogView> {
        self.store.log(key)
    }

    fn put_machine(&self, m: &Machine, replacing: Option<&MacAddr>, _from: &str) -> Result<(), ChangeError> {
        let (cfg, dir) = self.inventory_dir()?;
        let _w = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let snap = self.inventory.snapshot();
        let path = match replacing.and_then(|mac| snap.by_mac(mac)) {
            Some(e) => Self::own_file(e)?,
            None => {
                // A hostname is a DNS name (validated): no `/`, no leading dot.
                let mac = m.boot_mac().map(|x| x.to_string().replace(':', "")).unwrap_or_default();
                [format!("{}.json", m.hostname), format!("{}-{mac}.json", m.hostname)]
                    .into_iter()
                    .map(|n| dir.join(n))
                    .find(|p| !p.exists())
                    .ok_or_else(|| {
                        ChangeError::Conflict(format!("{}: a file by that name exists already", m.hostname))
                    })?
            }
        };
        let before = std::fs::read(&path).ok();
        write_record(&path, m)?;
        self.reload(cfg, || {
            let _ = match &before {
                Some(b) => super::leases::write_atomic(&path, b),
                None => std::fs::remove_file(&path).map_err(Into::into),
            };
        })
    }

    fn remove_machine(&self, mac: &MacAddr) -> Result<Option<String>, ChangeError> {
        let (cfg, _) = self.inventory_dir()?;
        let _w = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let snap = self.inventory.snapshot();
        let Some(e) = snap.by_mac(mac) else { return Ok(None) };
        let path = Self::own_file(e)?;
        let before = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        self.reload(cfg, || {
            let _ = super::leases::write_atomic(&path, &before);
        })?;
        Ok(Some(e.machine.hostname.clone()))
    }

    fn leases(&self) -> &dyn LeasePool {
        &self.leases
    }

    fn dhcp_requests(&self) -> &dyn RequestsSeen {
        &*self.requests
    }

    fn flush(&self) -> Result<()> {
        self.store.sync_trace()?;
        self.requests.flush()
    }

    fn describe(&self) -> String {
        format!("embedded ({})", self.store.path().display())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use osie_api::{Event, Phase};

    use super::*;
    use crate::config::Pool;
    use crate::inventory::load::parse_file;
    use crate::inventory::Backend;
    use crate::problem::Problems;

    /// 192.0.2.100–110.
    pub(crate) fn pool() -> Pool {
        Pool {
            start: "192.0.2.100".parse().unwrap(),
            end: "192.0.2.110".parse().unwrap(),
            prefix: 24,
            gateway: None,
            dns: vec![],
        }
    }

    /// Two machines: `fixed` (52:54:00:00:00:01, 192.0.2.10) and `pooled` (…:02 and …:03,
    /// no fixed address); state under `dir`, the pool above in memory, requests seen in
    /// memory (recording).
    pub(crate) fn storage(dir: &Path) -> EmbeddedStorage {
        let mut p = Problems::default();
        let mut entries = parse_file(
            Path::new("a.json"),
            r#"{"hostname":"fixed","macs":["52:54:00:00:00:01"],"ip":{"address":"192.0.2.10","prefix":24},"netboot":{"allow":true}}"#,
            &mut p,
        );
        entries.extend(parse_file(
            Path::new("b.json"),
            r#"{"hostname":"pooled","macs":["52:54:00:00:00:02","52:54:00:00:00:03"],"netboot":{"allow":true}}"#,
            &mut p,
        ));
        assert!(p.is_empty());
        let inv = Arc::new(Inventory::new(Snapshot::new(entries, Default::default())));
        EmbeddedStorage::from_parts(
            inv,
            Store::open(dir).unwrap(),
            LeaseStore::in_memory(Some(&pool())).unwrap(),
            DhcpRequests::in_memory(),
        )
    }

    /// Regression (found by tests/crash.rs): the lease store asks "is this address someone's
    /// reservation?" with its lock held; this backend answered through `by_ip`, which asks
    /// the lease store again: the first pool DISCOVER deadlocked the DHCP server for good.
    #[test]
    fn pool_offer_and_ack_through_this_backend_do_not_deadlock() {
        use crate::dhcp::reply::{self, Ctx, Outcome, Settings, Via};
        use crate::dhcp::request;
        use crate::storage::leases;

        let d = tempfile::tempdir().unwrap();
        let b = storage(d.path());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let settings = Settings {
                server_ip: "192.0.2.1".parse().unwrap(),
                mode: DhcpMode::Reservation,
                lease_secs: 3600,
                public_url: "http://192.0.2.1:8080".into(),
                pool: Some(pool()),
                uefi_chain: Default::default(),
            };
            let ctx = Ctx { settings: &settings, backend: &b, leases: b.leases(), now: leases::now() };
            let mac = [0x52, 0x54, 0, 0, 0, 2];
            let offer = reply::respond(&request::parse(&request::tests::discover(mac, &[])).unwrap(), Via::Dhcp, &ctx);
            let Outcome::Reply(r) = offer.outcome else { panic!("no offer: {:?}", offer.outcome) };
            let ip = r.msg.yiaddr();
            let mut pkt = request::tests::discover(mac, &[(50, &ip.octets()), (54, &[192, 0, 2, 1])]);
            pkt[request::HEADER_LEN + 2] = 3; // REQUEST
            let ack = reply::respond(&request::parse(&pkt).unwrap(), Via::Dhcp, &ctx);
            let Outcome::Reply(a) = ack.outcome else { panic!("no ack: {:?}", ack.outcome) };
            tx.send((r.kind, a.kind, a.msg.yiaddr(), b.by_ip(ip).map(|m| m.hostname.clone()))).unwrap();
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the DHCP answer came (no deadlock)");
        let ip: std::net::Ipv4Addr = "192.0.2.100".parse().unwrap();
        assert_eq!(got, ("offer", "ack", ip, Some("pooled".to_string())));
    }

    #[test]
    fn trace_and_log_rules() {
        let d = tempfile::tempdir().unwrap();
        crate::storage::trace_rules::the_trace_is_a_ring_per_machine(&storage(d.path()));
        let d = tempfile::tempdir().unwrap();
        let s = storage(d.path());
        crate::storage::trace_rules::log_chunks_are_bounded_deduplicated_and_evicted(&s);
        drop(s);
        let again = storage(d.path());
        assert_eq!(again.log(&"52:54:00:00:00:01".parse().unwrap()).unwrap().runs.len(), 2, "kept across a restart");
    }

    #[test]
    fn installed_clears_netboot_until_reinstall() {
        let d = tempfile::tempdir().unwrap();
        let b = storage(d.path());
        let second_nic: MacAddr = "52:54:00:00:00:03".parse().unwrap();
        assert!(b.netboot_allowed(&second_nic));
        let ev = Event {
            machine: second_nic,
            phase: Phase::Installed,
            progress: None,
            message: String::new(),
            time: "t".into(),
            run_id: None,
            seq: None,
            error: vec![],
            hardware: None,
            erase: None,
        };
        let key = crate::storage::state_key(&b.by_mac(&second_nic).unwrap()).unwrap();
        b.record_event(key, &ev, None, "t").unwrap();
        assert!(!b.netboot_allowed(&second_nic));
        assert!(!b.netboot_allowed(&"52:54:00:00:00:02".parse().unwrap()), "state is per machine, not per NIC");
        b.reinstall(key, "t2").unwrap();
        assert!(b.netboot_allowed(&second_nic));
        crate::storage::trace_rules::deprovisioning_until_reinstall(&b, key);
        assert!(!b.netboot_allowed(&"52:54:00:00:00:99".parse().unwrap()));
    }
}
