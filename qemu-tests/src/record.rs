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
    /// The record's `ip6` (/64): what bootsvc's DHCPv6 hands out (IPv6 labs).
    pub ip6: Option<std::net::Ipv6Addr>,
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
            ip6: None,
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
        if let Some(a) = self.ip6 {
            v["ip6"] = json!({ "address": a.to_string(), "prefix": 64 });
        }
        if self.fixed_address {
            v["ip"] = json!({ "address": self.ip.to_string(), "prefix": 24, "gateway": gateway });
        }
        v
    }
}

/// The scenario's Tinkerbell template, in the shape of Tinkerbell's published examples
/// (`bootsvc/docs/inventory.md`, "Tinkerbell `Template` and `Workflow`"): image2disk of a
/// `.raw.gz`, a writefile and a cexec that leave markers the first boot prints. `{img}` and
/// `{nonce}` are filled in; the Go-template expressions are bootsvc's to resolve.
const TEMPLATE: &str = r#"version: "0.1"
name: debian_bookworm
global_timeout: 1800
tasks:
  - name: "os-installation"
    worker: "{{.device_1}}"
    volumes:
      - /dev:/dev
      - /dev/console:/dev/console
      - /lib/firmware:/lib/firmware:ro
    actions:
      - name: "stream-debian-image"
        image: quay.io/tinkerbell/actions/image2disk:latest
        timeout: 600
        environment:
          DEST_DISK: {{ index .Hardware.Disks 0 }}
          IMG_URL: "{img}"
          COMPRESSED: true
      - name: "write-marker"
        image: quay.io/tinkerbell/actions/writefile:latest
        timeout: 90
        environment:
          DEST_DISK: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
          FS_TYPE: ext4
          DEST_PATH: /etc/osie-tink/writefile-marker
          CONTENTS: |
            osie-e2e {nonce} writefile wrote this
          UID: 0
          GID: 0
          MODE: 0644
          DIRMODE: 0755
      - name: "cexec-marker"
        image: quay.io/tinkerbell/actions/cexec:latest
        timeout: 90
        environment:
          BLOCK_DEVICE: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}
          FS_TYPE: ext4
          CHROOT: y
          DEFAULT_INTERPRETER: "/bin/sh -c"
          CMD_LINE: 'echo "osie-e2e {nonce} cexec ran: $((6*7)) $(. /etc/os-release && echo $ID) $(test -r /proc/self/mounts && echo proc)" > /etc/osie-tink/cexec-marker'
"#;

impl Record {
    /// The lines the first boot prints from the Tinkerbell template's writefile and cexec
    /// (the cexec's computed in the installed system: `42`, its `os-release` id, `/proc`).
    pub fn tinkerbell_markers(&self) -> [String; 2] {
        [
            format!("osie-e2e {} writefile wrote this", self.nonce),
            format!("osie-e2e {} cexec ran: 42 debian proc", self.nonce),
        ]
    }

    /// The machine as Tinkerbell has it (`kubectl get hardware,templates,workflows -o
    /// json`): a Hardware (its disk `/dev/vda`, the record's address, user-data that also
    /// prints the template's markers), a Template installing `img` (a `.raw.gz` URL) and a
    /// Workflow joining them.
    pub fn tinkerbell(&self, gateway: &str, img: &str) -> Value {
        let user_data = format!(
            "{}\x20 - [ sh, -c, 'cat /etc/osie-tink/writefile-marker /etc/osie-tink/cexec-marker > /dev/ttyS0' ]\n",
            self.user_data()
        );
        let mut dhcp =
            json!({ "arch": "x86_64", "hostname": self.hostname, "mac": self.mac, "lease_time": 86400, "uefi": false });
        if self.fixed_address {
            dhcp["ip"] = json!({ "address": self.ip.to_string(), "gateway": gateway, "netmask": "255.255.255.0" });
        }
        let meta = |name: &str| json!({ "name": name, "namespace": "tink-system" });
        json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "tinkerbell.org/v1alpha1",
                    "kind": "Hardware",
                    "metadata": meta(&self.hostname),
                    "spec": {
                        "disks": [{ "device": "/dev/vda" }],
                        "interfaces": [{ "dhcp": dhcp, "netboot": { "allowPXE": self.netboot, "allowWorkflow": true } }],
                        "metadata": { "instance": { "hostname": self.hostname } },
                        "userData": user_data
                    }
                },
                {
                    "apiVersion": "tinkerbell.org/v1alpha1",
                    "kind": "Template",
                    "metadata": meta("debian-bookworm"),
                    "spec": { "data": TEMPLATE.replace("{img}", img).replace("{nonce}", &self.nonce) }
                },
                {
                    "apiVersion": "tinkerbell.org/v1alpha1",
                    "kind": "Workflow",
                    "metadata": meta(&format!("{}-provision", self.hostname)),
                    "spec": {
                        "templateRef": "debian-bookworm",
                        "hardwareRef": self.hostname,
                        "hardwareMap": { "device_1": self.mac },
                        "bootOptions": { "toggleAllowNetboot": true }
                    }
                }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tinkerbell_documents_convert_to_the_plan() {
        let r = Record::new("node1", "52:54:00:e2:00:01", Ipv4Addr::new(192, 0, 2, 21));
        let doc = r.tinkerbell("192.0.2.1", "http://192.0.2.1:8080/images/debian-12.raw.gz");
        let mut p = bootsvc::problem::Problems::default();
        let e = bootsvc::inventory::load::parse_file(std::path::Path::new("node1.json"), &doc.to_string(), &mut p);
        assert!(p.is_empty(), "{p}");
        let m = &e[0].machine;
        let i = m.install.as_ref().unwrap();
        assert_eq!(i.image.url.as_deref(), Some("http://192.0.2.1:8080/images/debian-12.raw.gz"));
        assert_eq!(i.disk.path.as_deref(), Some("/dev/vda"));
        assert_eq!(i.steps.len(), 2);
        assert_eq!(
            i.steps[0].write_file.as_ref().unwrap().content.as_deref(),
            Some(format!("{}\n", r.tinkerbell_markers()[0]).as_str())
        );
        let cmd = &i.steps[1].run.as_ref().unwrap().command;
        assert_eq!(&cmd[..2], ["/bin/sh", "-c"]);
        assert!(cmd[2].contains(&format!("osie-e2e {} cexec ran: $((6*7))", r.nonce)), "{cmd:?}");
        assert_eq!(m.ip.as_ref().unwrap().address, r.ip);
        assert!(m.netboot.allow);
        let ud = m.cloud_init.user_data.as_deref().unwrap();
        assert!(ud.contains("cat /etc/osie-tink/writefile-marker /etc/osie-tink/cexec-marker > /dev/ttyS0"), "{ud}");
    }

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
