//! Tinkerbell `Hardware` records (tinkerbell.org/v1alpha1), as `kubectl get hardware -o json`
//! prints them, converted to osie machine records so operators can migrate.
//!
//! The mapping (the reference is `bootsvc/docs/inventory.md`):
//!
//! | Tinkerbell | osie |
//! |---|---|
//! | `spec.interfaces[].dhcp.mac` | `macs` (in interface order) |
//! | first `spec.interfaces[].dhcp.ip` {address, netmask, gateway} + `name_servers` | `ip` |
//! | `spec.metadata.instance.hostname`, else `dhcp.hostname`, else `metadata.name` | `hostname` |
//! | `spec.metadata.instance.id` | `instance_id` |
//! | `dhcp.arch` (`x86_64`, `aarch64`/`arm64`) | `arch` |
//! | any interface `netboot.allowPXE` (and `allowWorkflow` not false) | `netboot.allow` |
//! | `netboot.ipxe.contents` / `netboot.ipxe.url` (or `instance.ipxe_script_url`) | `netboot.ipxe_script` / `netboot.ipxe_script_url` |
//! | `spec.userData`, else `spec.metadata.instance.userdata` | `cloud_init.user_data` |
//! | `spec.vendorData` | `cloud_init.vendor_data` |
//! | `spec.metadata.instance.ssh_keys` | `ssh_keys` |
//! | `spec.disks[0].device` | `install.disk.path` |
//! | `metadata.labels` | `labels` |
//! | a `Workflow` naming it and its `Template` ([`super::tinkerbell_workflow`]) | `install` |
//! | annotation `osie/image` (instead) | `install.image.name` |
//! | `spec.bmcRef` (a rufio `Machine` in the same list) + annotation `osie/bmc-credentials` | `bmc` ([`super::tinkerbell_bmc`]) |
//!
//! Tinkerbell keeps the install plan in Workflows and Templates, listed in the same file;
//! the `osie/image` annotation is the short way for a machine without one. `allowWorkflow: false` means "do not provision", which for osie
//! (where netbooting means installing) is the same as not allowing netboot.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use osie_api::MacAddr;
use serde::Deserialize;

use super::model::{Arch, ImageRef, Install, IpConfig, Machine, Netboot};
use super::source::{Entry, Format, Source};
use super::tinkerbell_bmc::{is_rufio, Rufio, CREDENTIALS_ANNOTATION};
use super::tinkerbell_workflow::{is_workflow_kind, Workflows};
use crate::checks;
use crate::problem::{join_path, Problem, Problems};

/// Annotation naming the image (from `artifacts.images_dir`) to install.
pub const IMAGE_ANNOTATION: &str = "osie/image";

#[derive(Debug, Default, Deserialize)]
struct Hardware {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Spec,
}

#[derive(Debug, Default, Deserialize)]
struct ObjectMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct Spec {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    metadata: Option<HwMetadata>,
    #[serde(default)]
    disks: Vec<Disk>,
    #[serde(default, rename = "userData")]
    user_data: Option<String>,
    #[serde(default, rename = "vendorData")]
    vendor_data: Option<String>,
    #[serde(default, rename = "bmcRef")]
    bmc_ref: Option<BmcRef>,
}

#[derive(Debug, Default, Deserialize)]
struct BmcRef {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Interface {
    #[serde(default)]
    netboot: Option<TinkNetboot>,
    #[serde(default)]
    dhcp: Option<Dhcp>,
}

#[derive(Debug, Default, Deserialize)]
struct TinkNetboot {
    #[serde(default, rename = "allowPXE")]
    allow_pxe: Option<bool>,
    #[serde(default, rename = "allowWorkflow")]
    allow_workflow: Option<bool>,
    #[serde(default)]
    ipxe: Option<Ipxe>,
}

#[derive(Debug, Default, Deserialize)]
struct Ipxe {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    contents: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Dhcp {
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    name_servers: Vec<String>,
    #[serde(default)]
    arch: Option<String>,
    #[serde(default)]
    ip: Option<Ip>,
}

#[derive(Debug, Default, Deserialize)]
struct Ip {
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    netmask: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Disk {
    #[serde(default)]
    device: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct HwMetadata {
    #[serde(default)]
    instance: Option<Instance>,
}

#[derive(Debug, Default, Deserialize)]
struct Instance {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    userdata: Option<String>,
    #[serde(default)]
    ssh_keys: Vec<String>,
    #[serde(default)]
    ipxe_script_url: Option<String>,
}

/// Records from one parsed Tinkerbell document: a `Hardware`, or a list of them.
pub fn parse(file: &Path, value: serde_json::Value, problems: &mut Problems) -> Vec<Entry> {
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
    match kind.as_str() {
        "Hardware" => {
            convert_one(file, "", value, problems, &Rufio::default(), &Workflows::default()).into_iter().collect()
        }
        "List" | "HardwareList" => {
            let Some(items) = value.get("items").and_then(|i| i.as_array()) else {
                problems.0.push(Problem::new(file, "items", format!("a {kind} needs an items array")));
                return Vec::new();
            };
            // rufio `Machine`s (BMCs) listed beside the Hardware are read for their `bmcRef`s.
            let rufio = Rufio::collect(items);
            // Templates and Workflows beside them give the Hardware they name its install plan.
            let workflows = Workflows::collect(items);
            for (field, what) in workflows.problems() {
                problems.0.push(Problem::new(file, field, what));
            }
            items
                .iter()
                .enumerate()
                .filter(|(_, item)| !is_rufio(item) && !is_workflow_kind(item))
                .filter_map(|(i, item)| {
                    convert_one(file, &format!("items[{i}]"), item.clone(), problems, &rufio, &workflows)
                })
                .collect()
        }
        "Template" | "Workflow" => {
            problems.0.push(Problem::new(
                file,
                "kind",
                format!(
                    "a {kind} on its own: list it with its Hardware (kubectl get hardware,templates,workflows -o json)"
                ),
            ));
            Vec::new()
        }
        other => {
            problems.0.push(Problem::new(
                file,
                "kind",
                format!("{other:?} is not a kind osie reads: Hardware, HardwareList or List (or a native record without kind)"),
            ));
            Vec::new()
        }
    }
}

fn convert_one(
    file: &Path,
    item: &str,
    value: serde_json::Value,
    problems: &mut Problems,
    rufio: &Rufio,
    workflows: &Workflows,
) -> Option<Entry> {
    let hw: Hardware = match serde_path_to_error::deserialize(value) {
        Ok(h) => h,
        Err(e) => {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            problems.0.push(Problem::new(file, join_path(item, &field), e.into_inner().to_string()));
            return None;
        }
    };
    if hw.kind.as_deref().is_some_and(|k| k != "Hardware") {
        problems.0.push(Problem::new(file, join_path(item, "kind"), "items of a list must be Hardware"));
        return None;
    }
    let before = problems.len();
    let mut conv = Converter { file, item, problems, origins: Vec::new(), rufio, workflows };
    let machine = conv.machine(&hw);
    let origins = conv.origins;
    let source = Source { file: file.to_path_buf(), item: item.to_string(), format: Format::Tinkerbell, origins };
    (problems.len() == before).then(|| Entry { machine: Arc::new(machine), source })
}

struct Converter<'a> {
    file: &'a Path,
    item: &'a str,
    problems: &'a mut Problems,
    origins: Vec<(String, String)>,
    rufio: &'a Rufio,
    workflows: &'a Workflows,
}

impl Converter<'_> {
    fn problem(&mut self, field: &str, what: impl Into<String>) {
        self.problems.0.push(Problem::new(self.file, join_path(self.item, field), what));
    }

    fn from(&mut self, osie: &str, src: &str) {
        self.origins.push((osie.to_string(), src.to_string()));
    }

    fn machine(&mut self, hw: &Hardware) -> Machine {
        let instance = hw.spec.metadata.as_ref().and_then(|m| m.instance.as_ref());
        let mut m = Machine {
            hostname: String::new(),
            instance_id: None,
            macs: Vec::new(),
            ip: None,
            ip6: None,
            arch: Arch::default(),
            netboot: Netboot::default(),
            install: None,
            cloud_init: Default::default(),
            ssh_keys: Vec::new(),
            site: None,
            labels: hw.metadata.labels.clone(),
            bmc: None,
        };
        if !m.labels.is_empty() {
            self.from("labels", "metadata.labels");
        }
        self.interfaces(hw, &mut m);
        m.hostname = self.hostname(hw, instance);
        if let Some(id) = instance.and_then(|i| nonempty(&i.id)) {
            m.instance_id = Some(id.to_string());
            self.from("instance_id", "spec.metadata.instance.id");
        }
        if let Some(i) = instance {
            if !i.ssh_keys.is_empty() {
                m.ssh_keys = i.ssh_keys.clone();
                self.from("ssh_keys", "spec.metadata.instance.ssh_keys");
            }
            if m.netboot.ipxe_script_url.is_none() && m.netboot.ipxe_script.is_none() {
                if let Some(u) = nonempty(&i.ipxe_script_url) {
                    m.netboot.ipxe_script_url = Some(u.to_string());
                    self.from("netboot.ipxe_script_url", "spec.metadata.instance.ipxe_script_url");
                }
            }
        }
        if let Some(u) = nonempty(&hw.spec.user_data) {
            m.cloud_init.user_data = Some(u.to_string());
            self.from("cloud_init.user_data", "spec.userData");
        } else if let Some(u) = instance.and_then(|i| nonempty(&i.userdata)) {
            m.cloud_init.user_data = Some(u.to_string());
            self.from("cloud_init.user_data", "spec.metadata.instance.userdata");
        }
        if let Some(v) = nonempty(&hw.spec.vendor_data) {
            m.cloud_init.vendor_data = Some(v.to_string());
            self.from("cloud_init.vendor_data", "spec.vendorData");
        }
        let disks: Vec<String> = hw.spec.disks.iter().filter_map(|d| nonempty(&d.device).map(String::from)).collect();
        let macs: Vec<String> = m.macs.iter().map(ToString::to_string).collect();
        let planned = hw.metadata.name.as_deref().and_then(|n| self.workflows.plan(n, &disks, &macs));
        if let (Some(_), Some(_)) = (hw.metadata.annotations.get(IMAGE_ANNOTATION), &planned) {
            self.problem(
                &format!("metadata.annotations[\"{IMAGE_ANNOTATION}\"]"),
                "a Workflow in this file names this Hardware too: give the install plan one way (remove the annotation or the Workflow)",
            );
        } else if let Some(p) = planned {
            match p {
                Ok(p) => {
                    self.origins.extend(p.origins);
                    m.install = Some(p.install);
                }
                Err(refusals) => {
                    for (field, what) in refusals {
                        self.problems.0.push(Problem::new(self.file, field, what));
                    }
                }
            }
        } else if let Some(image) = hw.metadata.annotations.get(IMAGE_ANNOTATION) {
            let src = format!("metadata.annotations[\"{IMAGE_ANNOTATION}\"]");
            self.from("install", &src);
            self.from("install.image", &src);
            self.from("install.image.name", &src);
            let mut install = Install {
                image: ImageRef {
                    name: Some(image.clone()),
                    url: None,
                    sha256: None,
                    checksums_url: None,
                    signature_url: None,
                    size: None,
                    raw_size: None,
                    format: Default::default(),
                    checksum_of: Default::default(),
                },
                disk: Default::default(),
                gpt: Default::default(),
                uefi: Default::default(),
                finish: Default::default(),
                steps: Vec::new(),
            };
            if let Some(dev) = hw.spec.disks.first().and_then(|d| nonempty(&d.device)) {
                install.disk.path = Some(dev.to_string());
                self.from("install.disk.path", "spec.disks[0].device");
            }
            m.install = Some(install);
        } else if m.netboot.allow && m.netboot.ipxe_script.is_none() && m.netboot.ipxe_script_url.is_none() {
            self.from("install", &format!("metadata.annotations[\"{IMAGE_ANNOTATION}\"]"));
        }
        if let Some(creds) = hw.metadata.annotations.get(CREDENTIALS_ANNOTATION) {
            let src = format!("metadata.annotations[\"{CREDENTIALS_ANNOTATION}\"]");
            match hw.spec.bmc_ref.as_ref().and_then(|r| nonempty(&r.name)) {
                None => self.problem(&src, "names a BMC credentials file, but spec.bmcRef names no rufio Machine"),
                Some(name) => match self.rufio.bmc(name, creds) {
                    Ok(b) => {
                        self.from("bmc", "spec.bmcRef");
                        self.from("bmc.credentials", &src);
                        m.bmc = Some(b);
                    }
                    Err(e) => self.problem("spec.bmcRef.name", e),
                },
            }
        }
        m
    }

    fn hostname(&mut self, hw: &Hardware, instance: Option<&Instance>) -> String {
        if let Some(h) = instance.and_then(|i| nonempty(&i.hostname)) {
            self.from("hostname", "spec.metadata.instance.hostname");
            return h.to_string();
        }
        for (j, iface) in hw.spec.interfaces.iter().enumerate() {
            if let Some(h) = iface.dhcp.as_ref().and_then(|d| nonempty(&d.hostname)) {
                self.from("hostname", &format!("spec.interfaces[{j}].dhcp.hostname"));
                return h.to_string();
            }
        }
        self.from("hostname", "metadata.name");
        hw.metadata.name.clone().unwrap_or_default()
    }

    fn interfaces(&mut self, hw: &Hardware, m: &mut Machine) {
        let mut allow_from = None;
        let mut arch_set = false;
        for (j, iface) in hw.spec.interfaces.iter().enumerate() {
            let at = format!("spec.interfaces[{j}]");
            if let Some(d) = &iface.dhcp {
                if let Some(mac) = nonempty(&d.mac) {
                    match mac.parse::<MacAddr>() {
                        Ok(mac) => {
                            self.from(&format!("macs[{}]", m.macs.len()), &format!("{at}.dhcp.mac"));
                            m.macs.push(mac);
                        }
                        Err(e) => self.problem(&format!("{at}.dhcp.mac"), e.to_string()),
                    }
                }
                if m.ip.is_none() {
                    if let Some(ip) = d.ip.as_ref().filter(|ip| nonempty(&ip.address).is_some()) {
                        m.ip = self.ip(ip, &d.name_servers, &at);
                    }
                }
                if !arch_set {
                    if let Some(a) = nonempty(&d.arch) {
                        arch_set = true;
                        match a {
                            "x86_64" | "amd64" | "x86" => m.arch = Arch::X86_64,
                            "aarch64" | "arm64" => m.arch = Arch::Aarch64,
                            other => self.problem(
                                &format!("{at}.dhcp.arch"),
                                format!("{other:?} is not an architecture osie installs: x86_64 or aarch64"),
                            ),
                        }
                        self.from("arch", &format!("{at}.dhcp.arch"));
                    }
                }
            }
            if let Some(nb) = &iface.netboot {
                if nb.allow_pxe == Some(true) && nb.allow_workflow != Some(false) && allow_from.is_none() {
                    allow_from = Some(format!("{at}.netboot.allowPXE"));
                }
                if let Some(ipxe) = &nb.ipxe {
                    if m.netboot.ipxe_script.is_none() && m.netboot.ipxe_script_url.is_none() {
                        if let Some(c) = nonempty(&ipxe.contents) {
                            m.netboot.ipxe_script = Some(c.to_string());
                            self.from("netboot.ipxe_script", &format!("{at}.netboot.ipxe.contents"));
                        } else if let Some(u) = nonempty(&ipxe.url) {
                            m.netboot.ipxe_script_url = Some(u.to_string());
                            self.from("netboot.ipxe_script_url", &format!("{at}.netboot.ipxe.url"));
                        }
                    }
                }
            }
        }
        if hw.spec.interfaces.is_empty() {
            self.from("macs", "spec.interfaces");
        } else if m.macs.is_empty() {
            self.from("macs", "spec.interfaces[0].dhcp.mac");
        }
        m.netboot.allow = allow_from.is_some();
        self.from("netboot.allow", allow_from.as_deref().unwrap_or("spec.interfaces[0].netboot.allowPXE"));
    }

    fn ip(&mut self, ip: &Ip, dns: &[String], at: &str) -> Option<IpConfig> {
        let base = format!("{at}.dhcp.ip");
        self.from("ip", &base);
        self.from("ip.prefix", &format!("{base}.netmask"));
        self.from("ip.dns", &format!("{at}.dhcp.name_servers"));
        let address = self.addr(&format!("{base}.address"), ip.address.as_deref());
        let prefix = match nonempty(&ip.netmask) {
            None => {
                self.problem(&format!("{base}.netmask"), "missing: a fixed address needs its netmask");
                None
            }
            Some(mask) => match mask.parse::<Ipv4Addr>().map_err(|e| e.to_string()).and_then(checks::netmask_prefix) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.problem(&format!("{base}.netmask"), format!("{mask:?}: {e}"));
                    None
                }
            },
        };
        let gateway = nonempty(&ip.gateway).and_then(|g| self.addr(&format!("{base}.gateway"), Some(g)));
        let dns: Vec<Ipv4Addr> = dns
            .iter()
            .enumerate()
            .filter_map(|(i, d)| self.addr(&format!("{at}.dhcp.name_servers[{i}]"), Some(d)))
            .collect();
        Some(IpConfig { address: address?, prefix: prefix?, gateway, dns })
    }

    fn addr(&mut self, field: &str, s: Option<&str>) -> Option<Ipv4Addr> {
        let s = s.unwrap_or_default();
        match s.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(field, format!("{s:?} is not an IPv4 address"));
                None
            }
        }
    }
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tinkerbell").join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn convert(text: &str) -> (Vec<Entry>, Problems) {
        let mut p = Problems::default();
        let v = serde_json::from_str(text).unwrap();
        let e = parse(Path::new("hw.json"), v, &mut p);
        (e, p)
    }

    #[test]
    fn kubectl_list_converts() {
        let (e, p) = convert(&fixture("hardware-list.json"));
        assert!(p.is_empty(), "{p}");
        assert_eq!(e.len(), 2);
        let m = &e[0].machine;
        assert_eq!(m.hostname, "sm01");
        assert_eq!(m.instance_id.as_deref(), Some("3c:ec:ef:4c:7a:10"));
        assert_eq!(
            m.macs.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            ["3c:ec:ef:4c:7a:10", "3c:ec:ef:4c:7a:11"]
        );
        let ip = m.ip.as_ref().unwrap();
        assert_eq!((ip.address.to_string(), ip.prefix), ("192.0.2.21".to_string(), 24));
        assert_eq!(ip.gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(ip.dns.len(), 2);
        assert!(m.netboot.allow);
        assert_eq!(m.install.as_ref().unwrap().image.name.as_deref(), Some("debian-12"));
        assert_eq!(m.install.as_ref().unwrap().disk.path.as_deref(), Some("/dev/nvme0n1"));
        assert!(m.cloud_init.user_data.as_deref().unwrap().starts_with("#cloud-config"));
        assert_eq!(m.ssh_keys.len(), 1);
        assert_eq!(e[0].source.field("macs[1]"), "items[0].spec.interfaces[1].dhcp.mac");
        assert_eq!(e[0].source.field("install.image.name"), "items[0].metadata.annotations[\"osie/image\"]");
        let m2 = &e[1].machine;
        assert_eq!(m2.arch, Arch::Aarch64);
        assert!(!m2.netboot.allow, "allowWorkflow false");
        assert_eq!(m2.netboot.ipxe_script_url.as_deref(), Some("http://192.0.2.9/custom.ipxe"));
        assert_eq!(m2.hostname, "arm01");
    }

    #[test]
    fn bmc_ref_maps_with_the_rufio_machine_beside_it() {
        let (e, p) = convert(
            r#"{"apiVersion":"v1","kind":"List","items":[
              {"apiVersion":"bmc.tinkerbell.org/v1alpha1","kind":"Machine","metadata":{"name":"bmc-sm01"},
               "spec":{"connection":{"host":"192.0.2.201","port":623,"authSecretRef":{"name":"creds"},
                                     "providerOptions":{"redfish":{"port":443}}}}},
              {"apiVersion":"tinkerbell.org/v1alpha1","kind":"Hardware",
               "metadata":{"name":"sm01","annotations":{"osie/bmc-credentials":"/etc/osie/bmc/sm01.json"}},
               "spec":{"bmcRef":{"apiGroup":"bmc.tinkerbell.org","kind":"Machine","name":"bmc-sm01"},
                       "interfaces":[{"dhcp":{"mac":"52:54:00:00:00:01"}}]}},
              {"apiVersion":"tinkerbell.org/v1alpha1","kind":"Hardware",
               "metadata":{"name":"sm02","annotations":{"osie/bmc-credentials":"/etc/osie/bmc/sm02.json"}},
               "spec":{"bmcRef":{"kind":"Machine","name":"bmc-sm02"},"interfaces":[{"dhcp":{"mac":"52:54:00:00:00:02"}}]}},
              {"apiVersion":"tinkerbell.org/v1alpha1","kind":"Hardware","metadata":{"name":"sm03"},
               "spec":{"bmcRef":{"kind":"Machine","name":"bmc-sm01"},"interfaces":[{"dhcp":{"mac":"52:54:00:00:00:03"}}]}}
            ]}"#,
        );
        assert_eq!(p.len(), 1, "{p}");
        assert_eq!(p.0[0].field, "items[2].spec.bmcRef.name", "{p}");
        assert_eq!(e.len(), 2, "the rufio Machine is no record; sm02 has the problem");
        let b = e[0].machine.bmc.as_ref().unwrap();
        assert_eq!(
            (b.address.as_str(), b.credentials.to_str()),
            ("https://192.0.2.201:443", Some("/etc/osie/bmc/sm01.json"))
        );
        assert_eq!(e[0].source.field("bmc.credentials"), "items[1].metadata.annotations[\"osie/bmc-credentials\"]");
        assert_eq!(e[0].source.field("bmc.address"), "items[1].spec.bmcRef.address");
        assert!(e[1].machine.bmc.is_none(), "no credentials annotation: not mapped");
    }

    #[test]
    fn single_hardware_object_converts() {
        let (e, p) = convert(&fixture("hardware.json"));
        assert!(p.is_empty(), "{p}");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].source.item, "");
        assert_eq!(e[0].machine.hostname, "machine1");
        let labels: Vec<(&str, &str)> = e[0].machine.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(labels, [("example.com/role", "worker"), ("rack", "r12")], "metadata.labels carry over");
    }

    #[test]
    fn conversion_errors_name_tinkerbell_fields() {
        let (e, p) = convert(
            r#"{"apiVersion":"tinkerbell.org/v1alpha1","kind":"HardwareList","items":[
              {"kind":"Hardware","metadata":{"name":"a"},"spec":{"interfaces":[{"dhcp":{"mac":"zz","arch":"riscv",
               "ip":{"address":"192.0.2.5","netmask":"255.0.255.0"}}}]}},
              {"kind":"Hardware","metadata":{"name":"b"},"spec":{"interfaces":[{"dhcp":{"mac":"52:54:00:00:00:02","lease_time":"x"}}]}},
              {"kind":"Hardware","metadata":{"name":"c"},"spec":{"interfaces":"none"}}
            ]}"#,
        );
        assert_eq!(e.len(), 1, "b converts (unknown field types outside the mapping are ignored)");
        let fields: Vec<&str> = p.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "items[0].spec.interfaces[0].dhcp.mac",
                "items[0].spec.interfaces[0].dhcp.ip.netmask",
                "items[0].spec.interfaces[0].dhcp.arch",
                "items[2].spec.interfaces"
            ],
            "{p}"
        );
        let (_, p) = convert(r#"{"apiVersion":"v1","kind":"ConfigMap"}"#);
        assert_eq!(p.0[0].field, "kind");
    }
}
