//! Machines added, changed and removed through the admin API (the real `bootsvc serve`,
//! curl on the admin listener), with the embedded store (records are files in the inventory
//! directory) and with PostgreSQL (a throwaway cluster): every change validated as `bootsvc
//! check` validates the inventory, refused with the field named, served at once; never on
//! the machines' listener, never without the token.

mod common;

use common::{Options, Site, TOKEN};
use osie_testkit::postgres::Postgres;

fn record(host: &str, mac: &str, ip: &str) -> String {
    format!(
        r#"{{"hostname":"{host}","macs":["{mac}"],"ip":{{"address":"{ip}","prefix":24}},"netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#
    )
}

fn send(site: &Site, method: &str, path: &str, body: &str) -> osie_testkit::site::curl::Resp {
    let auth = format!("Authorization: Bearer {TOKEN}");
    site.admin_curl(&["-X", method, "-H", &auth, "-H", "Content-Type: application/json", "--data-binary", body], path)
}

/// The same changes, whichever storage `site` uses.
fn changes(site: &Site) {
    let r = send(site, "POST", "/admin/machines", &record("n1", "52:54:00:00:01:01", "192.0.2.41"));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["hostname"], "n1");
    assert_eq!(site.admin("GET", "/admin/machines/52:54:00:00:01:01").json()["netboot"]["allowed"], true);

    // Refused as `check` refuses it, field by field; nothing stored.
    let bad = record("n2", "52:54:00:00:01:02", "192.0.2.42").replace("24", "99").replace("debian-12", "debian-99");
    let r = send(site, "POST", "/admin/machines", &bad);
    assert_eq!(r.status, 400, "{}", r.text());
    let text = r.text();
    assert!(text.contains("request: ip.prefix: /99 is not a sane prefix"), "{text}");
    assert!(text.contains("request: install.image.name: no image \"debian-99\""), "{text}");
    assert_eq!(site.admin("GET", "/admin/machines/52:54:00:00:01:02").status, 404);
    let r = send(site, "POST", "/admin/machines", &record("n3", "52:54:00:00:01:01", "192.0.2.43"));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("request: macs[0]: MAC 52:54:00:00:01:01 is already used by n1"), "{}", r.text());
    let r = send(site, "POST", "/admin/machines", "{\"hostname\":");
    assert!(r.status == 400 && r.text().starts_with("request: not valid JSON"), "{}", r.text());

    // Changed: a second NIC, found by it at once.
    let changed = record("n1", "52:54:00:00:01:01", "192.0.2.41")
        .replace(r#"["52:54:00:00:01:01"]"#, r#"["52:54:00:00:01:01","52:54:00:00:01:09"]"#);
    let r = send(site, "PUT", "/admin/machines/52:54:00:00:01:01", &changed);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(site.admin("GET", "/admin/machines/52:54:00:00:01:09").json()["hostname"], "n1");
    assert_eq!(send(site, "PUT", "/admin/machines/52:54:00:00:09:09", &changed).status, 404);

    // Only on the admin listener, only with the token.
    let r =
        site.curl(&["-X", "POST", "--data-binary", &record("x", "52:54:00:00:01:03", "192.0.2.44")], "/admin/machines");
    assert_eq!(r.status, 404);
    let r = site.admin_curl(&["-X", "DELETE"], "/admin/machines/52:54:00:00:01:01");
    assert_eq!(r.status, 401);

    let r = send(site, "DELETE", "/admin/machines/52:54:00:00:01:09", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["hostname"], "n1");
    assert_eq!(site.admin("GET", "/admin/machines/52:54:00:00:01:01").status, 404);
    assert_eq!(send(site, "DELETE", "/admin/machines/52:54:00:00:01:01", "").status, 404);
}

#[test]
fn records_change_through_the_admin_api_in_files() {
    if !common::prerequisites("records_change_through_the_admin_api_in_files") {
        return;
    }
    let mut site = Site::new(Options::default());
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tinkerbell/hardware.json"),
        site.path("machines/tink.json"),
    )
    .unwrap();
    site.start();
    changes(&site);
    // Written as a file of its own, removed with it.
    let r = send(&site, "POST", "/admin/machines", &record("n4", "52:54:00:00:01:04", "192.0.2.45"));
    assert_eq!(r.status, 201, "{}", r.text());
    let written = std::fs::read_to_string(site.path("machines/n4.json")).unwrap();
    assert!(written.contains("\"hostname\": \"n4\""), "{written}");
    assert_eq!(send(&site, "DELETE", "/admin/machines/52:54:00:00:01:04", "").status, 200);
    assert!(!site.path("machines/n4.json").exists());
    // A machine from a Tinkerbell file is the operator's file to edit.
    let tink = "/admin/machines/52:54:00:0f:2e:67";
    let r = send(&site, "DELETE", tink, "");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("tink.json (Tinkerbell `Hardware`), which bootsvc does not rewrite"), "{}", r.text());
    site.stop();
}

#[test]
fn records_change_through_the_admin_api_in_postgres() {
    let t = "records_change_through_the_admin_api_in_postgres";
    if !common::prerequisites(t) {
        return;
    }
    let Some(pg) = Postgres::start(t) else { return };
    pg.create_database("osie").unwrap();
    let mut site = Site::new(Options::default());
    let url_file = site.path("db.url");
    std::fs::write(&url_file, pg.url("osie")).unwrap();
    std::fs::set_permissions(&url_file, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600))
        .unwrap();
    let text = std::fs::read_to_string(&site.config).unwrap();
    std::fs::write(
        &site.config,
        text.replace("[inventory]\ndir = \"machines\"\n", "[database]\nurl_file = \"db.url\"\n"),
    )
    .unwrap();
    let out = site.cli(&["db", "migrate", "--config", site.config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    site.start();
    changes(&site);
    let r = send(&site, "POST", "/admin/machines", &record("n5", "52:54:00:00:01:05", "192.0.2.46"));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["source"], "database (from admin API)");
    assert_eq!(pg.psql("osie", "SELECT hostname || ' ' || source FROM machines").unwrap(), "n5 admin API");
    site.stop();
}
