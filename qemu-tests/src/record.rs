//! Machine records for bootsvc's inventory (native format, `bootsvc/docs/inventory.md`),
//! as the scenarios need them: a fixed address on the lab's network (or none, for a lab in
//! proxy mode beside a site DHCP server), netboot allowed or not, the debian-12 image (by name, or by URL with a checksum of the scenario's choosing)
//! and user-data whose `runcmd` prints a marker on the serial console; an x86_64 machine, or
//! an arm64 one ([`Record::arm64`]).

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::inputs::IMAGE;

#[derive(Debug, Clone)]
pub struct Record {
    pub hostname: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    /// `ip` is written into the record as its fixed address. False: the record has none
    /// (proxy mode: the site DHCP server gives the machine its addresses).
    pub fixed_address: bool,
    pub netboot: bool,
    pub image: ImageRef,
    /// What `runcmd` prints to `/dev/ttyS0`; see [`Record::marker`].
    pub nonce: String,
    /// `install.uefi.boot_order` (`network-first`, `disk-first`); `None`: not written (the
    /// default, network-first).
    pub uefi_boot_order: Option<&'static str>,
    /// `netboot.uefi_chain`: `ipxe` or `shim-grub` (absent: the site's).
    pub uefi_chain: Option<&'static str>,
    /// The record's `arch` (`x86_64`, `aarch64`), which also sets the serial console the
    /// installer and the user-data write to ([`Record::console`]); `None`: not written
    /// (x86_64).
    pub arch: Option<&'static str>,
    /// The image's name in bootsvc's image directory ([`ImageRef::Named`]).
    pub image_name: String,
}

#[derive(Debug, Clone)]
pub enum ImageRef {
    /// The image by its manifest in bootsvc's image directory.
    Named,
    /// The image file by URL, with this sha256 (of the compressed file) and size.
    Url { url: String, sha256: String, size: u64, raw_size: Option<u64> },
}

impl Record {
    pub fn new(hostname: &str, mac: &str, ip: Ipv4Addr) -> Record {
        Record {
            hostname: hostname.to_string(),
            mac: mac.to_string(),
            ip,
            fixed_address: true,
            netboot: true,
            image: ImageRef::Named,
            nonce: osie_testkit::unique("n"),
            uefi_boot_order: None,
            uefi_chain: None,
            arch: None,
            image_name: IMAGE.to_string(),
        }
    }

    /// An arm64 machine (`arch: aarch64`): its console is the PL011 of QEMU's `virt` board.
    pub fn arm64(hostname: &str, mac: &str, ip: Ipv4Addr, image_name: &str) -> Record {
        Record { arch: Some("aarch64"), image_name: image_name.to_string(), ..Record::new(hostname, mac, ip) }
    }

    /// The serial console's device: `ttyS0`, `ttyAMA0` on arm64.
    pub fn console(&self) -> &'static str {
        if self.arch == Some("aarch64") {
            "ttyAMA0"
        } else {
            "ttyS0"
        }
    }

    /// What the installed OS's kernel says on the console: Debian's cloud flavour of the
    /// record's architecture (the installer's kernel is not that flavour).
    pub fn os_kernel(&self) -> &'static str {
        if self.arch == Some("aarch64") {
            "-cloud-arm64 ("
        } else {
            "-cloud-amd64 ("
        }
    }

    /// The line the installed OS prints on its serial console when cloud-init runs the
    /// user-data. The user-data holds `$((6*7))`, not `42`: seeing the marker means the
    /// shell ran the command, not that something echoed the user-data.
    pub fn marker(&self) -> String {
        format!("osie-e2e {} user-data ran: 42", self.nonce)
    }

    pub fn user_data(&self) -> String {
        format!(
            "#cloud-config\n\
             runcmd:\n\
             \x20 - [ sh, -c, 'echo \"osie-e2e {} user-data ran: $((6*7))\" > /dev/{}' ]\n",
            self.nonce,
            self.console()
        )
    }

    /// The record as bootsvc reads it; `gateway` is the lab network's router (bootsvc's own
    /// address there).
    pub fn to_json(&self, gateway: &str) -> Value {
        let image = match &self.image {
            ImageRef::Named => json!({ "name": self.image_name }),
            ImageRef::Url { url, sha256, size, raw_size } => {
                let mut v = json!({ "url": url, "sha256": sha256, "size": size, "format": "zstd" });
                if let Some(r) = raw_size {
                    v["raw_size"] = json!(r);
                }
                v
            }
        };
        let mut v = json!({
            "hostname": self.hostname,
            "macs": [self.mac],
            "netboot": { "allow": self.netboot },
            "install": {
                "image": image,
                "gpt": { "grow_last_partition": true },
                "finish": "reboot"
            },
            "cloud_init": { "user_data": self.user_data() }
        });
        if let Some(arch) = self.arch {
            v["arch"] = json!(arch);
        }
        if self.console() != "ttyS0" {
            // The site's kernel arguments name the PC's serial port; the last console= wins.
            v["netboot"]["kernel_args"] = json!(format!("console={},115200", self.console()));
        }
        if let Some(chain) = self.uefi_chain {
            v["netboot"]["uefi_chain"] = json!(chain);
        }
        if let Some(order) = self.uefi_boot_order {
            v["install"]["uefi"] = json!({ "boot_order": order });
        }
        if self.fixed_address {
            v["ip"] = json!({ "address": self.ip.to_string(), "prefix": 24, "gateway": gateway });
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_what_bootsvc_reads() {
        let r = Record::new("node1", "52:54:00:e2:00:01", Ipv4Addr::new(192, 0, 2, 21));
        let v = r.to_json("192.0.2.1");
        assert_eq!(v["macs"][0], "52:54:00:e2:00:01");
        assert_eq!((v["ip"]["address"].as_str(), v["ip"]["gateway"].as_str()), (Some("192.0.2.21"), Some("192.0.2.1")));
        assert_eq!(v["install"]["image"]["name"], IMAGE);
        let ud = v["cloud_init"]["user_data"].as_str().unwrap();
        assert!(ud.starts_with("#cloud-config\n") && ud.contains("$((6*7))") && !ud.contains(": 42"), "{ud}");
        assert!(r.marker().ends_with("user-data ran: 42"));
        let proxied = Record { fixed_address: false, ..r };
        assert!(proxied.to_json("192.0.2.1").get("ip").is_none(), "no fixed address");
        assert!(v.get("arch").is_none() && v["netboot"].get("kernel_args").is_none(), "{v}");
        let a = Record::arm64("a1", "52:54:00:a6:00:01", Ipv4Addr::new(192, 0, 2, 22), "debian-12-arm64");
        let v = a.to_json("192.0.2.1");
        assert_eq!(
            (v["arch"].as_str(), v["install"]["image"]["name"].as_str()),
            (Some("aarch64"), Some("debian-12-arm64"))
        );
        assert_eq!(v["netboot"]["kernel_args"], "console=ttyAMA0,115200");
        assert!(v["cloud_init"]["user_data"].as_str().unwrap().contains("> /dev/ttyAMA0"), "{v}");
    }
}
