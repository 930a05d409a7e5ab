//! bootsvc on PostgreSQL, against a real server (a throwaway cluster per test, from
//! `osie_testkit::postgres`): the `db` commands (migrate, import with `bootsvc check`'s
//! validation, export), `check` and `serve` on good and bad `[database]` settings (wrong URL,
//! password, database; unreachable; schema too old or too new), and two real `bootsvc serve`
//! instances on one segment sharing one database.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{write_tree, Options, Site};
use osie_testkit::postgres::Postgres;
use osie_testkit::site::config::{Database, Pool};

/// Run the real binary outside any namespace (the database is on a Unix socket).
fn bootsvc(args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(common::bin()).args(args).env_remove("RUST_LOG").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Switch the site config at `cfg` from `[inventory]` to `[database]`, its URL (password
/// included) in `db.url` beside it, readable by its owner only.
fn use_database(cfg: &Path, url: &str) {
    let dir = cfg.parent().unwrap();
    std::fs::write(dir.join("db.url"), format!("{url}\n")).unwrap();
    let owner_only = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    std::fs::set_permissions(dir.join("db.url"), owner_only).unwrap();
    let text = std::fs::read_to_string(cfg).unwrap();
    let inv = "[inventory]\ndir = \"machines\"\n";
    assert!(text.contains(inv));
    std::fs::write(cfg, text.replace(inv, "[database]\nurl_file = \"db.url\"\n")).unwrap();
}

fn edit(path: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(s.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, s.replacen(from, to, 1)).unwrap();
}

fn cfg_arg(cfg: &Path) -> &str {
    cfg.to_str().unwrap()
}

#[test]
fn migrate_check_and_bad_database_settings() {
    let Some(pg) = Postgres::start("migrate_check_and_bad_database_settings") else { return };
    pg.create_database("osie").unwrap();
    let d = tempfile::tempdir().unwrap();
    let cfg = write_tree(d.path(), &Options::default());
    use_database(&cfg, &pg.url("osie"));
    let c = cfg_arg(&cfg);

    let (code, out, err) = bootsvc(&["check", "--config", c]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("ok: {c}: machines in the database, 1 image"));

    let (code, out, err) = bootsvc(&["db", "migrate", "--config", c]);
    assert_eq!((code, out.trim()), (0, "schema migrated from version 0 to 2: applied 1 (initial), 2 (trace)"), "{err}");
    let (code, out, err) = bootsvc(&["db", "migrate", "--config", c]);
    assert_eq!((code, out.trim()), (0, "the schema is up to date (version 2)"), "{err}");
    assert_eq!(pg.psql("osie", "SELECT version, name FROM osie_schema").unwrap(), "1|initial\n2|trace");

    // A password in the config itself.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("url_file = \"db.url\"", &format!("url = \"{}\"", pg.url("osie")))).unwrap();
    let (code, out, _) = bootsvc(&["check", "--config", c]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with(&format!("{c}: database.url: contains a password")), "{out}");
    assert!(!out.contains(&pg.password), "the password is never repeated: {out}");
    // url and url_file, or a file that is not there or others may read.
    std::fs::write(&cfg, &text).unwrap();
    edit(&cfg, "url_file = \"db.url\"", "url_file = \"nope.url\"");
    let (code, out, _) = bootsvc(&["check", "--config", c]);
    assert_eq!(code, 1);
    let missing = d.path().join("nope.url");
    assert!(out.contains(&format!("{c}: database.url_file: cannot read {}: No such file", missing.display())), "{out}");
    std::fs::write(&cfg, &text).unwrap();
    let loose = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644);
    std::fs::set_permissions(d.path().join("db.url"), loose).unwrap();
    let (code, out, _) = bootsvc(&["check", "--config", c]);
    assert_eq!(code, 1);
    assert!(
        out.contains("database.url_file:") && out.contains("may read or change the database URL; run chmod 600"),
        "{out}"
    );
    let (code, _, err) = bootsvc(&["db", "migrate", "--config", c]);
    assert_eq!(code, 1);
    assert!(err.contains("database.url_file:"), "the commands refuse it too: {err}");
    // Both [inventory] and [database].
    std::fs::write(&cfg, format!("{text}\n[inventory]\ndir = \"machines\"\n")).unwrap();
    let (code, out, _) = bootsvc(&["check", "--config", c]);
    assert_eq!(code, 1);
    assert!(out.contains(&format!("{c}: inventory.dir: not used with [database]")), "{out}");
    std::fs::write(&cfg, &text).unwrap();

    // Wrong password, wrong database, nothing listening: each says where and why, never
    // the password.
    let owner_only = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    let url_file = d.path().join("db.url");
    let try_url = |url: &str| {
        std::fs::write(&url_file, url).unwrap();
        std::fs::set_permissions(&url_file, owner_only.clone()).unwrap();
        let (code, out, err) = bootsvc(&["db", "migrate", "--config", c]);
        assert_eq!(code, 1, "{out}");
        assert!(!err.contains(&pg.password), "{err}");
        err
    };
    let shown = pg.url_without_password("osie").replacen('@', ":***@", 1);
    let err = try_url(&pg.url("osie").replace(&pg.password, "wrong-password"));
    assert!(
        err.contains(&format!("connecting to {shown}: FATAL: password authentication failed for user \"osie\"")),
        "{err}"
    );
    let err = try_url(&pg.url("nope"));
    assert!(err.contains("FATAL: database \"nope\" does not exist"), "{err}");
    let gone = pg.url("osie").replace("sock", "nosock");
    let err = try_url(&gone);
    assert!(err.contains("connecting to postgresql://osie:***@") && err.contains("No such file or directory"), "{err}");
    std::fs::write(&url_file, pg.url("osie")).unwrap();
}

/// `serve` refuses a database without the schema, an older and a newer one, and an
/// unreachable one, saying so.
#[test]
fn serve_refuses_other_schema_versions() {
    if !common::prerequisites("serve_refuses_other_schema_versions") {
        return;
    }
    let Some(pg) = Postgres::start("serve_refuses_other_schema_versions") else { return };
    pg.create_database("osie").unwrap();
    let mut site = Site::new(Options::default());
    site.reconfigure(|c| c.database = Some(Database::new(&pg.url("osie")))).unwrap();
    let (status, log) = site.start_fails();
    assert!(!status.success());
    assert!(log.contains("has no osie schema: run `bootsvc db migrate` first"), "{log}");
    assert!(!log.contains(&pg.password), "{log}");

    let (code, _, err) = bootsvc(&["db", "migrate", "--config", cfg_arg(&site.config)]);
    assert_eq!(code, 0, "{err}");
    pg.psql("osie", "INSERT INTO osie_schema VALUES (3, 'from-the-future', 'x', now(), 'a newer bootsvc')").unwrap();
    let (_, log) = site.start_fails();
    assert!(log.contains("the database's schema is version 3, newer than this bootsvc knows (2)"), "{log}");
    pg.psql("osie", "DELETE FROM osie_schema").unwrap();
    let (_, log) = site.start_fails();
    assert!(
        log.contains("the database's schema is version 0, older than this bootsvc's (2): run `bootsvc db migrate`"),
        "{log}"
    );
    pg.psql("osie", "INSERT INTO osie_schema SELECT 1, 'initial', 'edited', now(), 'x'").unwrap();
    let (_, log) = site.start_fails();
    assert!(
        log.contains("schema version 1 (initial) in the database differs from this bootsvc's migration 1"),
        "{log}"
    );

    let url = pg.url("osie").replace("sock", "nosock");
    std::fs::write(site.path("db.url"), url).unwrap();
    let (_, log) = site.start_fails();
    assert!(log.contains("connecting to postgresql://osie:***@") && log.contains("No such file or directory"), "{log}");
}

/// Three records files and a Tinkerbell list, two of them with problems.
fn records(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let rec = |host: &str, mac: &str, ip: &str| {
        format!(
            r#"{{"hostname":"{host}","macs":["{mac}"],"ip":{{"address":"{ip}","prefix":24}},"netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#
        )
    };
    std::fs::write(dir.join("a.json"), rec("a", "52:54:00:00:0a:01", "192.0.2.31")).unwrap();
    std::fs::write(dir.join("b.json"), rec("b", "52:54:00:00:0b:01", "192.0.2.32")).unwrap();
    // An unknown image and a broken prefix.
    std::fs::write(
        dir.join("bad.json"),
        rec("bad", "52:54:00:00:0c:01", "192.0.2.33").replace("debian-12", "debian-99").replace("24", "99"),
    )
    .unwrap();
    // A's MAC again.
    std::fs::write(dir.join("dup.json"), rec("dup", "52:54:00:00:0a:01", "192.0.2.34")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tinkerbell/hardware-list.json"),
        dir.join("tink.json"),
    )
    .unwrap();
}

fn lines_with(out: &str, needle: &str) -> Vec<String> {
    let mut v: Vec<String> = out.lines().filter(|l| l.contains(needle)).map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn import_validates_as_check_does_and_export_round_trips() {
    let Some(pg) = Postgres::start("import_validates_as_check_does_and_export_round_trips") else { return };
    let d = tempfile::tempdir().unwrap();
    let cfg = write_tree(d.path(), &Options::default());
    let machines = d.path().join("machines");
    records(&machines);
    // What `check` says about the directory as an inventory…
    let (code, check_out, _) = bootsvc(&["check", "--config", cfg_arg(&cfg)]);
    assert_eq!(code, 1);
    let problems = lines_with(&check_out, &machines.display().to_string());
    assert!(problems.len() >= 3, "{check_out}");
    for f in ["bad.json: ip.prefix", "bad.json: install.image.name", "dup.json: macs[0]: MAC 52:54:00:00:0a:01"] {
        assert!(problems.iter().any(|p| p.contains(f)), "{f} missing from {problems:?}");
    }

    // …`db import` says word for word, and imports the files without problems only.
    pg.create_database("osie").unwrap();
    use_database(&cfg, &pg.url("osie"));
    let c = cfg_arg(&cfg);
    assert_eq!(bootsvc(&["db", "migrate", "--config", c]).0, 0);
    let dir = machines.to_str().unwrap();
    let (code, out, err) = bootsvc(&["db", "import", dir, "--config", c]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(lines_with(&out, dir), problems, "the same problems as check");
    let tink_machines = pg_count(&pg, "osie", "SELECT count(*) FROM machines WHERE source LIKE '%tink.json%'");
    assert!(tink_machines >= 2, "{out}");
    assert!(
        out.ends_with(&format!(
            "imported {n} machines ({n} new, 0 replaced) from 3 files; 2 files with problems not imported\n",
            n = 2 + tink_machines
        )),
        "{out}"
    );
    let hosts = pg.psql("osie", "SELECT string_agg(hostname, ',' ORDER BY hostname) FROM machines").unwrap();
    assert_eq!(hosts, "a,arm01,b,sm01", "the Tinkerbell list's two, a and b");
    assert_eq!(
        pg_count(&pg, "osie", "SELECT count(*) FROM machine_macs"),
        pg_count(&pg, "osie", "SELECT sum(jsonb_array_length(record->'macs')) FROM machines")
    );

    // Fixed: imported again, the good files replace what they hold, the fixed ones are added.
    std::fs::remove_file(machines.join("dup.json")).unwrap();
    let text = std::fs::read_to_string(machines.join("bad.json")).unwrap();
    std::fs::write(machines.join("bad.json"), text.replace("debian-99", "debian-12").replace("99", "24")).unwrap();
    let (code, out, err) = bootsvc(&["db", "import", dir, "--config", c]);
    assert_eq!(code, 0, "{out}{err}");
    let n = 3 + tink_machines;
    assert_eq!(out.trim(), format!("imported {n} machines (1 new, {} replaced) from 4 files", n - 1));

    // Export, and back into another database: the same records.
    let out_dir = d.path().join("exported");
    let (code, out, err) = bootsvc(&["db", "export", out_dir.to_str().unwrap(), "--config", c]);
    assert_eq!((code, out.trim().to_string()), (0, format!("exported {n} machines to {}", out_dir.display())), "{err}");
    let (code, _, err) = bootsvc(&["db", "export", out_dir.to_str().unwrap(), "--config", c]);
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");
    pg.create_database("copy").unwrap();
    std::fs::write(d.path().join("db.url"), pg.url("copy")).unwrap();
    assert_eq!(bootsvc(&["db", "migrate", "--config", c]).0, 0);
    let (code, out, err) = bootsvc(&["db", "import", out_dir.to_str().unwrap(), "--config", c]);
    assert_eq!(
        (code, out.trim().to_string()),
        (0, format!("imported {n} machines ({n} new, 0 replaced) from {n} files")),
        "{err}"
    );
    let records = "SELECT string_agg(record::text, E'\\n' ORDER BY boot_mac) FROM machines";
    assert_eq!(pg.psql("copy", records).unwrap(), pg.psql("osie", records).unwrap());
    // And an embedded store reads the export as its inventory.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("[database]\nurl_file = \"db.url\"\n", "[inventory]\ndir = \"exported\"\n"))
        .unwrap();
    let (code, out, err) = bootsvc(&["check", "--config", c]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{n} machines")), "{out}");
}

fn pg_count(pg: &Postgres, db: &str, sql: &str) -> usize {
    pg.psql(db, sql).unwrap().parse().unwrap()
}

/// Machines in the fleet test.
const FLEET: usize = 200;

fn fleet_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0x02, (i >> 8) as u8, i as u8]
}

fn fleet_mac_str(i: usize) -> String {
    osie_api::MacAddr::new(fleet_mac(i)).to_string()
}

/// A second `bootsvc serve` in its own namespace on the site's LAN, at 192.0.2.2.
struct Second {
    ns: osie_testkit::Netns,
    iface: String,
    log: std::path::PathBuf,
    _server: osie_testkit::ChildGuard,
}

impl Second {
    fn start(site: &Site, bridge: &str) -> Second {
        let (ns, iface) = site.join(bridge, "02:00:00:00:01:02", Some("192.0.2.2/24"));
        let text = std::fs::read_to_string(&site.config).unwrap();
        let text = text
            .replace("address = \"192.0.2.1\"", "address = \"192.0.2.2\"")
            .replace("listen = \"192.0.2.1:8080\"", "listen = \"192.0.2.2:8080\"")
            .replace("public_url = \"http://192.0.2.1:8080/\"", "public_url = \"http://192.0.2.2:8080/\"")
            .replace(&format!("interface = \"{bridge}\""), &format!("interface = \"{iface}\""))
            .replace("dir = \"state\"", "dir = \"state-b\"");
        let cfg = site.path("second.toml");
        std::fs::write(&cfg, text).unwrap();
        let log = site.path("second.log");
        let mut cmd = ns.cmd(common::bin());
        cmd.args(["serve", "--config"])
            .arg(&cfg)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let server = osie_testkit::ChildGuard::spawn("the second bootsvc", &mut cmd).unwrap();
        let mut me = Second { ns, iface, log, _server: server };
        osie_testkit::wait_for("the second bootsvc to answer", std::time::Duration::from_secs(20), || {
            assert!(me._server.check_running().is_ok(), "the second bootsvc exited:\n{}", me.logs());
            (me.curl(&[], "http://192.0.2.2:8080/healthz").0 == 200).then_some(())
        })
        .unwrap();
        me
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// curl in its namespace: status and body.
    fn curl(&self, args: &[&str], url: &str) -> (u16, String) {
        let out = self
            .ns
            .cmd("curl")
            .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
            .args(args)
            .arg(url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn admin(&self, method: &str, path: &str) -> serde_json::Value {
        let auth = format!("Authorization: Bearer {}", common::TOKEN);
        let (code, body) = self.curl(&["-X", method, "-H", &auth], &format!("{}{path}", common::ADMIN));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn metric(&self, prefix: &str) -> u64 {
        let (_, m) = self.curl(&[], "http://192.0.2.2:8080/metrics");
        m.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
    }
}

impl Drop for Second {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- second bootsvc log ----\n{}", self.logs());
        }
    }
}

/// A site serving DHCP on its LAN with its machines in database `db` of `pg` (migrated),
/// with `pool` (first, last address) and `site` when given, not yet started; and the LAN.
fn database_site(pg: &Postgres, db: &str, pool: Option<(&str, &str)>, site: Option<&str>) -> (Site, String) {
    pg.create_database(db).unwrap();
    let s = Site::new(Options::default());
    let bridge = s.lan();
    s.serve_on(&bridge, false);
    s.reconfigure(|c| {
        c.dhcp.pool = pool.map(|(start, end)| Pool {
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
            prefix: 24,
            gateway: Some("192.0.2.1".parse().unwrap()),
        });
        let mut d = Database::new(&pg.url(db));
        d.site = site.map(str::to_string);
        c.database = Some(d);
    })
    .unwrap();
    assert_eq!(bootsvc(&["db", "migrate", "--config", cfg_arg(&s.config)]).0, 0);
    (s, bridge)
}

/// Write `records` (file name, JSON) into a directory of the site and `bootsvc db import` it.
fn import_records(site: &Site, records: impl IntoIterator<Item = (String, String)>) {
    let dir = site.path("records");
    std::fs::create_dir(&dir).unwrap();
    for (name, json) in records {
        std::fs::write(dir.join(name), json).unwrap();
    }
    let (code, out, err) = bootsvc(&["db", "import", dir.to_str().unwrap(), "--config", cfg_arg(&site.config)]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A pool machine's record, as the fleet tests write it.
fn fleet_record(i: usize) -> (String, String) {
    let json = format!(
        r#"{{"hostname":"f{i}","macs":["{}"],"netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#,
        fleet_mac_str(i)
    );
    (format!("f{i}.json"), json)
}

/// The address offered to `mac` by one DISCOVER (sent twice at most) from `client`.
fn offer_to(client: &osie_testkit::Netns, iface: &str, mac: [u8; 6]) -> Option<std::net::Ipv4Addr> {
    let iface = iface.to_string();
    client
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let mut cfg = osie_testkit::dhcp::ClientConfig::broadcast(&iface);
                cfg.retries = 1;
                let dhcp = osie_testkit::dhcp::DhcpClient::bind(cfg)?;
                let id = osie_testkit::dhcp::Identity { mac, arch: 0, ipxe: false };
                Ok(dhcp.offer(&id).await.ok().map(|o| o.yiaddr))
            })
        })
        .join()
        .unwrap()
        .unwrap()
}

type Leased = Vec<(std::net::Ipv4Addr, std::net::Ipv4Addr)>;

/// Every machine of the fleet through one DHCP exchange (whichever instance answers
/// first): its address and the server that acknowledged it.
fn storm(client: &osie_testkit::Netns, iface: &str) -> Leased {
    storm_of(client, iface, FLEET).join().unwrap().unwrap()
}

/// Machines `0..n` of the fleet, each through one DHCP exchange, in the background: each
/// tries for 16 s (a client that got a NAK starts over, as a real one does).
fn storm_of(client: &osie_testkit::Netns, iface: &str, n: usize) -> std::thread::JoinHandle<anyhow::Result<Leased>> {
    use osie_testkit::dhcp::client::ExchangeError;
    use osie_testkit::dhcp::{ClientConfig, DhcpClient, Identity};
    let iface = iface.to_string();
    client.spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        rt.block_on(async move {
            let mut cfg = ClientConfig::broadcast(&iface);
            cfg.retries = 15;
            let dhcp = std::sync::Arc::new(DhcpClient::bind(cfg)?);
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    let dhcp = std::sync::Arc::clone(&dhcp);
                    tokio::spawn(async move {
                        let id = Identity { mac: fleet_mac(i), arch: 0, ipxe: false };
                        let mut tries = 0;
                        loop {
                            match dhcp.exchange(&id).await {
                                Ok(l) => return Ok((l.address, l.server_id)),
                                Err(ExchangeError::Nak(_)) if tries < 3 => tries += 1,
                                Err(e) => return Err(anyhow::anyhow!("machine {i}: {e}")),
                            }
                        }
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await??);
            }
            Ok(out)
        })
    })
}

#[test]
fn two_instances_share_one_database() {
    let t = "two_instances_share_one_database";
    if !common::prerequisites(t) {
        return;
    }
    let Some(pg) = Postgres::start(t) else { return };
    let (mut site, bridge) = database_site(&pg, "fleet", Some(("192.0.2.20", "192.0.2.250")), None);
    import_records(&site, (0..FLEET).map(fleet_record));
    site.start();
    let second = Second::start(&site, &bridge);
    let (client, cli_if) = site.join(&bridge, "02:00:00:00:01:03", None);

    // The storm, through both: every machine one address, no address twice, the same in
    // the database.
    let started = std::time::Instant::now();
    let leases = storm(&client, &cli_if);
    let secs = started.elapsed().as_secs_f64();
    let addrs: std::collections::BTreeSet<_> = leases.iter().map(|(a, _)| *a).collect();
    assert_eq!(addrs.len(), FLEET, "no address twice");
    let by_a = leases.iter().filter(|(_, s)| s.octets() == [192, 0, 2, 1]).count();
    eprintln!(
        "{FLEET} machines leased in {secs:.1} s through both instances: {by_a} acked by the first, {} by the second",
        FLEET - by_a
    );
    for (a, _) in &leases {
        assert!((20..=250).contains(&a.octets()[3]) && a.octets()[..3] == [192, 0, 2], "{a} outside the pool");
    }
    assert_eq!(
        pg.psql("fleet", "SELECT count(*), count(DISTINCT ip), count(DISTINCT mac) FROM pool_leases").unwrap(),
        format!("{FLEET}|{FLEET}|{FLEET}")
    );
    for (i, (a, _)) in leases.iter().enumerate().step_by(37) {
        let ip =
            pg.psql("fleet", &format!("SELECT host(ip) FROM pool_leases WHERE mac = '{}'", fleet_mac_str(i))).unwrap();
        assert_eq!(ip, a.to_string(), "machine {i}");
    }
    // Again: each machine the same address, whichever instance answers now.
    let again = storm(&client, &cli_if);
    for (i, ((a, _), (b, _))) in leases.iter().zip(&again).enumerate() {
        assert_eq!(a, b, "machine {i} got another address the second time");
    }

    // Events from each machine's address, each sent to both instances: stored once. Each
    // machine's address is on a macvlan with its MAC on the client's interface (so answers
    // reach it), and the servers' neighbour tables say so (as its ARP reply would).
    let batch = site.path("client-addrs.batch");
    let lines: String = leases
        .iter()
        .enumerate()
        .map(|(i, (a, _))| {
            format!(
                "link add m{i} link {cli_if} address {} type macvlan mode bridge\naddr add {a}/32 dev m{i}\nlink set m{i} up\n",
                fleet_mac_str(i)
            )
        })
        .collect();
    std::fs::write(&batch, lines + &format!("route add 192.0.2.0/24 dev {cli_if}\n")).unwrap();
    client.ip(&["-batch", batch.to_str().unwrap()]).unwrap();
    for (ns, dev) in [(&site.ns, bridge.as_str()), (&second.ns, second.iface.as_str())] {
        let batch = site.path(&format!("neigh-{dev}.batch"));
        let lines: String = leases
            .iter()
            .enumerate()
            .map(|(i, (a, _))| format!("neigh replace {a} lladdr {} dev {dev} nud permanent\n", fleet_mac_str(i)))
            .collect();
        std::fs::write(&batch, lines).unwrap();
        ns.ip(&["-batch", batch.to_str().unwrap()]).unwrap();
    }
    let addrs: Vec<std::net::Ipv4Addr> = leases.iter().map(|(a, _)| *a).collect();
    let acks = client
        .spawn(move || {
            let post = |i: usize, server: [u8; 4]| {
                let ev = format!(
                    r#"{{"machine":"{}","phase":"booted-installer","time":"2026-01-01T00:00:00Z","run_id":"fleet-{i}","seq":0}}"#,
                    fleet_mac_str(i)
                );
                let to = std::net::SocketAddrV4::new(server.into(), 8080);
                let h = [("Content-Type", "application/json")];
                let (status, body) = osie_testkit::http::request(addrs[i], to, "POST", "/events", &h, ev.as_bytes(), std::time::Duration::from_secs(20))?;
                anyhow::ensure!(status == 200, "machine {i} to {to}: {status} {}", String::from_utf8_lossy(&body));
                let ack: serde_json::Value = serde_json::from_slice(&body)?;
                Ok(ack["duplicate"].as_bool() == Some(true))
            };
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let post = &post;
                    (t..FLEET).step_by(8).map(move |i| {
                        let (first, other) = if i % 2 == 0 { ([192, 0, 2, 1], [192, 0, 2, 2]) } else { ([192, 0, 2, 2], [192, 0, 2, 1]) };
                        Ok::<_, anyhow::Error>((post(i, first)?, post(i, other)?))
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in threads {
                for r in t {
                    out.push(r?);
                }
            }
            Ok(out)
        })
        .join()
        .unwrap()
        .unwrap();
    assert!(acks.iter().all(|(first, other)| !first && *other), "the first stored, the second a duplicate: {acks:?}");
    assert_eq!(
        pg.psql("fleet", "SELECT count(*), count(DISTINCT key) FROM events").unwrap(),
        format!("{FLEET}|{FLEET}")
    );
    let counted = site.metric("osie_events_total{kind=\"booted-installer\"}")
        + second.metric("osie_events_total{kind=\"booted-installer\"}");
    assert_eq!(counted, FLEET as u64, "each event counted once, by the instance that stored it");

    // A finished install clears netboot on both; a reinstall through one is acted on by
    // the other within 2 s.
    let m0 = fleet_mac_str(0);
    let installed =
        format!(r#"{{"machine":"{m0}","phase":"installed","time":"2026-01-01T00:00:01Z","run_id":"fleet-0","seq":1}}"#);
    let from = leases[0].0.to_string();
    let r = site.curl_in(
        &client,
        &["--interface", &from, "-H", "Content-Type: application/json", "--data-binary", &installed],
        "/events",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let allowed = |v: &serde_json::Value| v["netboot"]["allowed"].as_bool().unwrap();
    let took = wait_2s("the second instance to see the install", || {
        !allowed(&second.admin("GET", &format!("/admin/machines/{m0}")))
    });
    eprintln!("install seen by the other instance after {took:?}");
    second.admin("POST", &format!("/admin/machines/{m0}/reinstall"));
    let took = wait_2s("the first instance to see the reinstall", || {
        allowed(&site.admin("GET", &format!("/admin/machines/{m0}")).json())
    });
    eprintln!("reinstall through the second instance seen by the first after {took:?}");

    // `bootsvc machines` shows the same through either.
    let view = |v: serde_json::Value| -> Vec<(String, bool, u64, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["hostname"].as_str().unwrap().to_string(),
                    allowed(m),
                    m["state"]["events"].as_u64().unwrap(),
                    m["state"]["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let a_view = view(site.admin("GET", "/admin/machines").json());
    assert_eq!(a_view.len(), FLEET);
    assert_eq!(a_view, view(second.admin("GET", "/admin/machines")));
}

/// Poll `f` every 10 ms for at most 2 s; how long it took.
fn wait_2s(what: &str, f: impl Fn() -> bool) -> std::time::Duration {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < std::time::Duration::from_secs(2), "{what}: not within 2 s");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    start.elapsed()
}

/// Machines with fixed addresses on the site's loopback (the kit's client addresses), which
/// post events from those addresses.
const FIXED: [(&str, &str); 3] =
    [("e1", "52:54:00:00:0e:01"), ("e2", "52:54:00:00:0e:02"), ("e3", "52:54:00:00:0e:03")];

/// An event as the installer posts it (`run`/`seq` `None`: as cloud-init's phone-home).
fn event_json(mac: &str, phase: &str, run: Option<(&str, u64)>) -> String {
    let run = run.map(|(r, s)| format!(r#","run_id":"{r}","seq":{s}"#)).unwrap_or_default();
    format!(r#"{{"machine":"{mac}","phase":"{phase}","time":"2026-01-01T00:00:00Z"{run}}}"#)
}

/// `(stored, duplicate)` of an event posted from machine `i` of [`FIXED`].
fn post_event(site: &Site, i: usize, phase: &str, run: Option<(&str, u64)>) -> (bool, bool) {
    let r = site.post_json_as(common::CLIENTS[i], "/events", &event_json(FIXED[i].1, phase, run));
    assert_eq!(r.status, 200, "{}", r.text());
    let ack = r.json();
    (ack["stored"].as_bool() == Some(true), ack["duplicate"].as_bool() == Some(true))
}

#[test]
fn database_outage_keeps_known_machines_and_loses_no_event() {
    let t = "database_outage_keeps_known_machines_and_loses_no_event";
    if !common::prerequisites(t) {
        return;
    }
    let Some(mut pg) = Postgres::start(t) else { return };
    const POOLED: usize = 60;
    let (mut site, bridge) = database_site(&pg, "osie", Some(("192.0.2.100", "192.0.2.199")), None);
    // Pool machines 0..POOLED, and one more that asks first during the outage; and the
    // fixed-address machines.
    let fixed = FIXED.iter().enumerate().map(|(i, (host, mac))| {
        let json = format!(
            r#"{{"hostname":"{host}","macs":["{mac}"],"ip":{{"address":"{}","prefix":24}},"netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#,
            common::CLIENTS[i]
        );
        (format!("{host}.json"), json)
    });
    import_records(&site, (0..=POOLED).map(fleet_record).chain(fixed));
    site.start();
    let (client, cli_if) = site.join(&bridge, "02:00:00:00:01:03", None);
    let counts =
        |pg: &Postgres| pg.psql("osie", "SELECT count(*), count(DISTINCT ip), count(DISTINCT mac) FROM pool_leases");

    // PostgreSQL stopped in the middle of a storm (once the first machines have leases)
    // and started 3 s later: every machine gets one address (clients retry through the
    // outage), none twice.
    let storm = storm_of(&client, &cli_if, POOLED);
    osie_testkit::wait_for("the first leases", std::time::Duration::from_secs(20), || {
        (site.metric("osie_dhcp_replies_total{kind=\"ack\"}") >= 5).then_some(())
    })
    .unwrap();
    pg.stop().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    pg.restart().unwrap();
    let leases =
        storm.join().unwrap().unwrap_or_else(|e| panic!("{e:#}\n{}", osie_testkit::site::tail(&site.logs(), 30)));
    let addrs: std::collections::BTreeSet<_> = leases.iter().map(|(a, _)| *a).collect();
    assert_eq!(addrs.len(), POOLED, "no address twice: {leases:?}");
    assert_eq!(counts(&pg).unwrap(), format!("{POOLED}|{POOLED}|{POOLED}"));
    let refused = site.metric("osie_dropped_packets_total{reason=\"dhcp-lease-store\"}");
    eprintln!(
        "storm through a 3 s database outage: {POOLED} machines, {refused} DHCP requests refused for the lease store"
    );
    assert!(refused > 0, "the outage came too late to meet the storm");
    assert!(site.logs().contains("reason=\"dhcp-lease-store\""), "said in the log");

    // The database gone: known machines keep their addresses and scripts, a new machine
    // gets no address (it could not be recorded), events are acknowledged into the spool.
    pg.stop().unwrap();
    let again = storm_of(&client, &cli_if, POOLED).join().unwrap().unwrap();
    assert_eq!(again, leases, "each machine its own address again, from memory");
    let refused = site.metric("osie_dropped_packets_total{reason=\"dhcp-lease-store\"}");
    let late = offer_to(&client, &cli_if, fleet_mac(POOLED)).is_some();
    assert!(!late, "a machine without an address gets none while the database is gone");
    assert!(site.metric("osie_dropped_packets_total{reason=\"dhcp-lease-store\"}") > refused);
    let script = |i: usize| site.get_as(common::CLIENTS[i], None, &format!("/boot/{}.ipxe", FIXED[i].1));
    assert_eq!(script(0).status, 200);
    assert!(script(0).text().contains("osie.mac="), "{}", script(0).text());

    assert_eq!(post_event(&site, 0, "booted-installer", Some(("r0", 0))), (true, false));
    assert_eq!(post_event(&site, 0, "booted-installer", Some(("r0", 0))), (true, true), "a retry is a duplicate");
    assert_eq!(post_event(&site, 0, "installed", Some(("r0", 1))), (true, false));
    assert_eq!(post_event(&site, 1, "first-boot", None), (true, false));
    assert_eq!(post_event(&site, 1, "first-boot", None), (true, false), "phone-homes are all kept");
    // The install cleared netboot here at once, although the database has not heard of it.
    assert!(!script(0).text().contains("osie.mac="), "{}", script(0).text());
    assert_eq!(site.metric("osie_database_up"), 0);
    assert_eq!(site.metric("osie_database_spooled_events"), 4);

    // Back: the spool is replayed in order, each event once, and the state is the database's.
    pg.restart().unwrap();
    osie_testkit::wait_for("the spool to be replayed", std::time::Duration::from_secs(10), || {
        (site.metric("osie_database_spooled_events") == 0 && site.metric("osie_database_up") == 1).then_some(())
    })
    .unwrap();
    let events = |pg: &Postgres| pg.psql("osie", "SELECT count(*) FROM events").unwrap();
    assert_eq!(events(&pg), "4");
    assert_eq!(
        pg.psql("osie", &format!("SELECT string_agg(phase, ',' ORDER BY n) FROM events WHERE key = '{}'", FIXED[0].1))
            .unwrap(),
        "booted-installer,installed"
    );
    let state = site.admin("GET", &format!("/admin/machines/{}", FIXED[0].1)).json();
    assert_eq!(state["netboot"]["allowed"], false, "{state}");

    // Gone again, events spooled, bootsvc killed: restarted, it replays what it acknowledged.
    pg.stop().unwrap();
    assert_eq!(post_event(&site, 2, "booted-installer", Some(("r2", 0))), (true, false));
    assert_eq!(post_event(&site, 2, "disk-selected", Some(("r2", 1))), (true, false));
    assert_eq!(post_event(&site, 1, "first-boot", None), (true, false));
    site.kill9();
    pg.restart().unwrap();
    site.start();
    osie_testkit::wait_for("the spool to be replayed after the restart", std::time::Duration::from_secs(10), || {
        (site.metric("osie_database_spooled_events") == 0).then_some(())
    })
    .unwrap();
    assert_eq!(events(&pg), "7");
    assert_eq!(
        pg.psql("osie", "SELECT count(*) FROM (SELECT DISTINCT key, run_id, seq FROM events) AS d").unwrap(),
        "7",
        "no event twice"
    );
    assert!(
        site.logs().contains("events spooled by an earlier run, to replay"),
        "{}",
        osie_testkit::site::tail(&site.logs(), 20)
    );
    site.stop();
}

/// An instance serves its own site's machines and those of no site; another site's machine
/// gets no DHCP answer and a local-boot script, and the log says whose it is; every site is
/// listed through any instance.
#[test]
fn an_instance_serves_its_own_site() {
    let t = "an_instance_serves_its_own_site";
    if !common::prerequisites(t) {
        return;
    }
    let Some(pg) = Postgres::start(t) else { return };
    let (mut site, bridge) = database_site(&pg, "osie", None, Some("fra1"));
    let records = [r#","site":"fra1""#, r#","site":"ams1""#, ""].iter().enumerate().map(|(i, site_field)| {
        let (host, mac) = FIXED[i];
        let json = format!(
            r#"{{"hostname":"{host}","macs":["{mac}"],"ip":{{"address":"{}","prefix":24}},"netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}{site_field}}}"#,
            common::CLIENTS[i]
        );
        (format!("{host}.json"), json)
    });
    import_records(&site, records);
    site.start();

    let script = |i: usize| site.get_as(common::CLIENTS[i], None, &format!("/boot/{}.ipxe", FIXED[i].1)).text();
    assert!(script(0).contains("osie.mac="), "its own site's machine installs: {}", script(0));
    assert!(script(2).contains("osie.mac="), "a machine of no site is every site's: {}", script(2));
    assert!(!script(1).contains("osie.mac="), "{}", script(1));
    assert!(site.logs().contains("52:54:00:00:0e:02 is a machine of site ams1: that site's instances serve it"));

    let (client, cli_if) = site.join(&bridge, "02:00:00:00:01:03", None);
    let offered = |mac: &str| offer_to(&client, &cli_if, mac.parse::<osie_api::MacAddr>().unwrap().octets());
    assert_eq!(offered(FIXED[0].1), Some(common::CLIENTS[0].parse().unwrap()));
    assert_eq!(offered(FIXED[1].1), None, "another site's machine gets no offer");
    assert!(site.metric("osie_dropped_packets_total{reason=\"dhcp-other-site\"}") >= 1);
    assert!(site.logs().contains("a machine of site ams1"), "{}", osie_testkit::site::tail(&site.logs(), 10));

    let listed = site.admin("GET", "/admin/machines").json();
    let hosts: Vec<&str> = listed.as_array().unwrap().iter().map(|m| m["hostname"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["e1", "e3"]);
    let sites = site.admin_cli(&["sites"]).unwrap();
    assert_eq!(
        sites.lines().map(str::trim_end).collect::<Vec<_>>(),
        [
            "  SITE                     MACHINES",
            "  (none: every site)              1",
            "  ams1                            1",
            "* fra1                            1"
        ],
        "{sites}"
    );
    site.stop();
}
