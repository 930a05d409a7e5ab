//! The server side of the soak: the test kit's site (`osie_testkit::site`) with a bridge
//! (198.51.100.1/24) the machines' namespaces join, bootsvc serving the soak image and one
//! record per install. The kit's site is the supervisor: it SIGKILLs bootsvc and starts it
//! again at any moment, from any thread.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Deref;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use osie_testkit::site::config::{Admin, Log};
use osie_testkit::site::{self, Dir, Launch};
use osie_testkit::{unique, Netns};

use crate::image::Image;

pub const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Where machines believe bootsvc is: their own proxy listens there (`proxy.rs`).
pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const PORT: u16 = 8080;
pub const TOKEN: &str = "soak-admin-token-0123456789abcdef";

/// Machine `i`'s MAC and address.
pub fn mac(i: usize) -> String {
    format!("02:50:00:00:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff)
}

pub fn addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 10 + (i % 240) as u8)
}

/// A marker only machine `i`'s user-data holds (checked in its seed).
pub fn user_data(i: usize) -> String {
    format!("#cloud-config\n# soak machine {i}\nhostname: soak{i}\n")
}

pub struct Site {
    site: site::Site,
    pub bridge: String,
}

impl Deref for Site {
    type Target = site::Site;
    fn deref(&self) -> &site::Site {
        &self.site
    }
}

impl Site {
    /// The namespace, the tree in `dir` (config, image, `machines` records for installs
    /// `0..machines`) and bootsvc started.
    pub fn new(dir: &Path, bootsvc: &Path, image: &Image, machines: usize) -> Result<Site> {
        if machines > 240 {
            bail!("at most 240 machines (one 198.51.100.0/24 address each); run several soaks for more");
        }
        for sub in ["tftp", "artifacts", "images", "machines"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        // The artifacts must exist for the config to validate; the installs never use them.
        std::fs::write(dir.join("artifacts/vmlinuz"), b"not a kernel")?;
        std::fs::write(dir.join("artifacts/initramfs.img"), b"not an initramfs")?;
        std::fs::copy(&image.zst, dir.join("images/soak.raw.zst"))?;
        image.write_manifest(&dir.join("images"))?;
        for i in 0..machines {
            let rec = serde_json::json!({
                "hostname": format!("soak{i}"), "macs": [mac(i)],
                "ip": {"address": addr(i).to_string(), "prefix": 24},
                "netboot": {"allow": true}, "install": {"image": {"name": "soak"}},
                "cloud_init": {"user_data": user_data(i)},
                "ssh_keys": [format!("ssh-ed25519 AAAAsoak{i} soak@{i}")],
            });
            std::fs::write(dir.join(format!("machines/soak{i}.json")), rec.to_string())?;
        }
        // HTTP and the admin API only; machines reach HTTP through their proxies, which
        // connect to the bridge's address.
        let bridge = unique("sb");
        let mut config = site::Config::new(&bridge, BRIDGE_ADDR);
        config.dhcp.enabled = Some(false);
        config.tftp.enabled = Some(false);
        config.http.listen = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT);
        config.http.public_url = format!("http://{PUBLIC}:{PORT}");
        config.admin = Some(Admin::with_token(TOKEN));
        config.log = Log { format: None, level: Some("info".into()) };
        let site = site::Site::new(Launch::new(bootsvc), Dir::Kept(dir.to_path_buf()), config)?;
        // A fixed MAC: as machines' veths come and go, the bridge's would otherwise change
        // under the machines' ARP caches and their packets to bootsvc would go nowhere for
        // half a minute.
        site.bridge(&bridge, &format!("{BRIDGE_ADDR}/24"), Some("02:50:ff:00:00:01"))?;
        site.start()?;
        Ok(Site { site, bridge })
    }

    /// GET an admin path as JSON, waiting through a restart of bootsvc.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        self.site.admin_json(path, Duration::from_secs(60))
    }

    /// A veth from the bridge into `other`; its ends (here, there).
    pub fn attach(&self, other: &Netns) -> Result<(String, String)> {
        self.site.attach(&self.bridge, other, None)
    }

    /// Rate-limit the link's download direction (the bridge side's egress) with tbf: the
    /// kernel here has no netem, tbf is what it has.
    pub fn slow_link(&self, here: &str, mbit: u64) -> Result<()> {
        let rate = format!("{mbit}mbit");
        let out = self
            .ns
            .cmd("tc")
            .args(["qdisc", "add", "dev", here, "root", "tbf", "rate", &rate, "burst", "64kb", "latency", "200ms"])
            .output()?;
        if !out.status.success() {
            bail!("tc tbf on {here}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}
