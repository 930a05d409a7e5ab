//! Checks on parsed machine records: each record on its own (against the config and the
//! image catalog), then across records (MACs, fixed addresses and instance ids are unique).
//! Problems name the file and the field as written in that file.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use osie_api::MacAddr;

use super::images::Images;
use super::model::{ImageRef, Install, Ip6Config, IpConfig, Machine};
use super::source::{Entry, Source};
use crate::checks;
use crate::config::{Config, DhcpMode, UefiChain};
use crate::grub;
use crate::ipxe;
use crate::problem::{Problem, Problems};

/// Problems of one record, each at `source.field(osie_path)`.
struct Report<'a> {
    source: &'a Source,
    out: &'a mut Problems,
}

impl Report<'_> {
    fn add(&mut self, field: &str, what: impl Into<String>) {
        self.out.0.push(Problem::new(&self.source.file, self.source.field(field), what));
    }

    fn check(&mut self, field: &str, r: Result<(), String>) {
        if let Err(e) = r {
            self.add(field, e);
        }
    }
}

/// Labels one record may carry.
const MAX_LABELS: usize = 64;

/// Check one record.
pub fn machine(e: &Entry, cfg: &Config, images: &Images, out: &mut Problems) {
    let m = &e.machine;
    let mut r = Report { source: &e.source, out };
    r.check("hostname", checks::hostname(&m.hostname));
    if let Some(id) = &m.instance_id {
        r.check("instance_id", checks::instance_id(id));
    }
    if let Some(site) = &m.site {
        r.check("site", checks::site_name(site));
    }
    if m.labels.len() > MAX_LABELS {
        r.add("labels", format!("{} labels: at most {MAX_LABELS}", m.labels.len()));
    }
    for (k, v) in &m.labels {
        r.check(&format!("labels[{k:?}]"), checks::label_key(k).and_then(|_| checks::label_value(v)));
    }
    macs(m, &mut r);
    match &m.ip {
        Some(ip) => ip_config(ip, cfg, &mut r),
        // An IPv6 address (the record's `ip6`, or SLAAC in the advertised prefix) is enough.
        None if m.ip6.is_some() || cfg.router_advertisements.prefix.is_some() => {}
        None if cfg.dhcp.enabled && cfg.dhcp.mode == DhcpMode::Reservation && cfg.dhcp.pool.is_none() => r.add(
            "ip",
            "no fixed address and dhcp.pool is not configured: the machine would get no address in reservation mode \
             (nor an IPv6 one: no ip6, no router_advertisements.prefix)",
        ),
        None => {}
    }
    if let Some(ip6) = &m.ip6 {
        ip6_config(ip6, cfg, &mut r);
    }
    netboot(m, &mut r);
    uefi_chain(m, cfg, &mut r);
    if let Some(install) = &m.install {
        install_plan(m, install, images, &mut r);
    }
    for (i, k) in m.ssh_keys.iter().enumerate() {
        r.check(&format!("ssh_keys[{i}]"), checks::ssh_key(k));
    }
    for (field, v) in [
        ("cloud_init.user_data", &m.cloud_init.user_data),
        ("cloud_init.meta_data", &m.cloud_init.meta_data),
        ("cloud_init.network_config", &m.cloud_init.network_config),
        ("cloud_init.vendor_data", &m.cloud_init.vendor_data),
    ] {
        if v.as_deref().is_some_and(|s| s.contains('\0')) {
            r.add(field, "contains a NUL byte");
        }
    }
    if let Some(b) = &m.bmc {
        for (field, what) in super::bmc::check(b, cfg) {
            r.add(&format!("bmc.{field}"), what);
        }
    }
}

fn macs(m: &Machine, r: &mut Report) {
    if m.macs.is_empty() {
        r.add("macs", "no MAC address: a machine is found by its MACs");
    }
    for (i, mac) in m.macs.iter().enumerate() {
        let o = mac.octets();
        if o == [0; 6] || o[0] & 1 == 1 {
            r.add(&format!("macs[{i}]"), format!("{mac} is not a NIC's address (zero, multicast or broadcast)"));
        }
        if m.macs[..i].contains(mac) {
            r.add(&format!("macs[{i}]"), format!("{mac} is listed twice"));
        }
    }
}

fn ip6_config(ip: &Ip6Config, cfg: &Config, r: &mut Report) {
    if !(48..=128).contains(&ip.prefix) {
        r.add("ip6.prefix", format!("/{} is not a sane prefix: 48 to 128", ip.prefix));
    }
    if let Err(e) = checks::host_address6(ip.address) {
        r.add("ip6.address", e);
    } else if cfg.dhcp6.address == Some(ip.address) {
        r.add("ip6.address", format!("{} is bootsvc's own address (dhcp6.address)", ip.address));
    }
}

fn ip_config(ip: &IpConfig, cfg: &Config, r: &mut Report) {
    if !(8..=32).contains(&ip.prefix) {
        r.add("ip.prefix", format!("/{} is not a sane prefix: 8 to 32", ip.prefix));
        return;
    }
    let (net, bcast) = checks::subnet(ip.address, ip.prefix);
    if let Err(e) = checks::host_address(ip.address) {
        r.add("ip.address", e);
    } else if ip.prefix < 31 && (ip.address == net || ip.address == bcast) {
        r.add("ip.address", format!("{} is the network or broadcast address of {net}/{}", ip.address, ip.prefix));
    }
    if ip.address == cfg.listen.address {
        r.add("ip.address", format!("{} is bootsvc's own address (listen.address)", ip.address));
    }
    if let Some(pool) = cfg.dhcp.pool.as_ref().filter(|_| cfg.dhcp.mode == DhcpMode::Reservation) {
        if (u32::from(pool.start)..=u32::from(pool.end)).contains(&u32::from(ip.address)) {
            r.add(
                "ip.address",
                format!(
                    "{} is inside dhcp.pool ({}-{}), which may lease it to another machine",
                    ip.address, pool.start, pool.end
                ),
            );
        }
    }
    if let Some(g) = ip.gateway {
        if checks::subnet(g, ip.prefix).0 != net || g == ip.address {
            r.add("ip.gateway", format!("{g} is not another host of {net}/{}", ip.prefix));
        }
    }
    for (i, d) in ip.dns.iter().enumerate() {
        r.check(&format!("ip.dns[{i}]"), checks::host_address(*d));
    }
}

fn netboot(m: &Machine, r: &mut Report) {
    let nb = &m.netboot;
    if nb.ipxe_script.is_some() && nb.ipxe_script_url.is_some() {
        r.add("netboot.ipxe_script_url", "give ipxe_script or ipxe_script_url, not both");
    }
    if let Some(u) = &nb.ipxe_script_url {
        r.check("netboot.ipxe_script_url", ipxe::check_url(u, &["http", "https", "tftp"]));
    }
    if nb.ipxe_script.as_deref().is_some_and(|s| s.trim().is_empty()) {
        r.add("netboot.ipxe_script", "is empty");
    }
    if let Some(a) = &nb.kernel_args {
        if let Some(mac) = m.boot_mac() {
            // The machine's own arguments on their own: the service's are checked with the config.
            r.check("netboot.kernel_args", ipxe::installer_args("http://192.0.2.1", "", Some(a), mac).map(|_| ()));
        } else {
            r.check("netboot.kernel_args", ipxe::split_args(a).map(|_| ()));
        }
    }
    if nb.allow && nb.ipxe_script.is_none() && nb.ipxe_script_url.is_none() && m.install.is_none() {
        r.add("install", "missing: netboot.allow is true but there is nothing to install (or set netboot.allow false)");
    }
}

/// A machine given the shim/GRUB chain: its GRUB configuration and kernel arguments; and,
/// when the site's default is iPXE, what the site needs for the chain (`grub::check_chain`).
fn uefi_chain(m: &Machine, cfg: &Config, r: &mut Report) {
    let nb = &m.netboot;
    if nb.grub_config.as_deref().is_some_and(|s| s.trim().is_empty()) {
        r.add("netboot.grub_config", "is empty");
    }
    if m.uefi_chain(cfg.boot.uefi_chain) != UefiChain::ShimGrub {
        return;
    }
    if cfg.boot.uefi_chain != UefiChain::ShimGrub {
        r.check("netboot.uefi_chain", cfg.check_shim_grub());
    }
    if let Some(a) = &nb.kernel_args {
        r.check("netboot.kernel_args", grub::check_args(a));
    }
}

fn install_plan(m: &Machine, i: &Install, images: &Images, r: &mut Report) {
    image_ref(m, &i.image, images, r);
    for (n, step) in i.steps.iter().enumerate() {
        for (field, what) in step.check() {
            let at =
                if field.is_empty() { format!("install.steps[{n}]") } else { format!("install.steps[{n}].{field}") };
            r.add(&at, what);
        }
    }
    let d = &i.disk;
    if d.path.as_deref().is_some_and(|p| !p.starts_with("/dev/")) {
        r.add("install.disk.path", "must be a /dev/… path");
    }
    if let (Some(min), Some(max)) = (d.min_size, d.max_size) {
        if min > max {
            r.add("install.disk.max_size", format!("{max} is smaller than min_size {min}"));
        }
    }
    let layout = &i.gpt.layout;
    if !layout.is_empty() {
        let images_in = layout.iter().filter(|p| p.image).count();
        if images_in != 1 {
            r.add("install.gpt.layout", format!("exactly one partition must have \"image\": true, not {images_in}"));
        }
        for (n, p) in layout.iter().enumerate() {
            let at = format!("install.gpt.layout[{n}]");
            if p.name.is_empty() || p.name.chars().count() > 36 {
                r.add(&format!("{at}.name"), "1 to 36 characters (the GPT limit)");
            }
            r.check(&format!("{at}.type"), partition_type(&p.type_guid));
            if p.size == osie_api::size::SizeSpec::Rest && n + 1 != layout.len() {
                r.add(&format!("{at}.size"), "\"rest\" only for the last partition");
            }
        }
        if i.gpt.grow_last_partition {
            r.add("install.gpt.grow_last_partition", "has no meaning with a layout (size the last partition \"rest\")");
        }
    }
}

fn image_ref(m: &Machine, img: &ImageRef, images: &Images, r: &mut Report) {
    match (&img.name, &img.url) {
        (Some(_), Some(_)) => r.add("install.image", "give name or url, not both"),
        (None, None) => r.add("install.image", "give name (an image in artifacts.images_dir) or url"),
        (Some(name), None) => {
            match images.get(name) {
                None => {
                    let known: Vec<&str> = images.keys().map(String::as_str).collect();
                    r.add(
                        "install.image.name",
                        format!("no image {name:?} in artifacts.images_dir (known: {})", list_or_none(&known)),
                    );
                }
                // The installer would write it and the machine would not boot it.
                Some(image) if image.arch != m.arch => {
                    let fitting: Vec<&str> =
                        images.values().filter(|i| i.arch == m.arch).map(|i| i.name.as_str()).collect();
                    r.add(
                        "install.image.name",
                        format!(
                            "machine {} is {} (its record's \"arch\", absent meaning x86_64) but image {name:?} is \
                             {} (\"arch\" in {name}.json in artifacts.images_dir): an image of another \
                             architecture is never served (its {} images: {})",
                            m.hostname,
                            m.arch.as_str(),
                            image.arch.as_str(),
                            m.arch.as_str(),
                            list_or_none(&fitting)
                        ),
                    );
                }
                Some(_) => {}
            }
            for (field, set) in [
                ("install.image.sha256", img.sha256.is_some()),
                ("install.image.checksums_url", img.checksums_url.is_some()),
                ("install.image.signature_url", img.signature_url.is_some()),
                ("install.image.size", img.size.is_some()),
                ("install.image.raw_size", img.raw_size.is_some()),
            ] {
                if set {
                    r.add(field, "comes from the image's manifest when the image is given by name");
                }
            }
        }
        (None, Some(url)) => {
            if let Err(e) = ipxe::check_url(url, &["http", "https"]) {
                r.add("install.image.url", e);
            }
            match (&img.sha256, &img.checksums_url) {
                (None, None) if super::images::by_file(images, url).is_some() => {}
                (None, None) => r.add(
                    "install.image.sha256",
                    "missing: an image given by URL needs its sha256 (or checksums_url, or a file of artifacts.images_dir by that name, whose manifest gives it)",
                ),
                (Some(_), Some(_)) => r.add("install.image.checksums_url", "give sha256 or checksums_url, not both"),
                (Some(s), None) => r.check("install.image.sha256", checks::sha256_hex(s)),
                (None, Some(u)) => {
                    if let Err(e) = ipxe::check_url(u, &["http", "https"]) {
                        r.add("install.image.checksums_url", e);
                    }
                    if crate::inventory::checksums::file_name(url).is_none() {
                        r.add("install.image.url", "ends in no file name to look up in the checksums file");
                    }
                }
            }
            match (&img.signature_url, &img.checksums_url) {
                (Some(_), None) => r.add("install.image.signature_url", "signs a checksums_url: give that too"),
                (Some(u), Some(_)) => {
                    if let Err(e) = ipxe::check_url(u, &["http", "https"]) {
                        r.add("install.image.signature_url", e);
                    }
                }
                (None, _) => {}
            }
            if img.format == osie_api::ImageFormat::Qcow2 && img.checksum_of == osie_api::ChecksumOf::Raw {
                r.add(
                    "install.image.checksum_of",
                    "a qcow2 image's sha256 covers the file (\"compressed\"), not the disk",
                );
            }
        }
    }
}

fn partition_type(t: &str) -> Result<(), String> {
    const ALIASES: [&str; 5] = ["linux", "esp", "bios-boot", "swap", "linux-root-x86-64"];
    let is_guid = t.len() == 36
        && t.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() });
    if is_guid || ALIASES.contains(&t) {
        Ok(())
    } else {
        Err(format!("{t:?} is not a GUID or one of {}", ALIASES.join(", ")))
    }
}

fn list_or_none(v: &[&str]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The problems of `new` as a change to the inventory `current`: on its own, and across
/// `current` without the machine that has `replacing` among its MACs (the one it replaces).
pub fn change(current: &[Entry], new: &Entry, replacing: Option<&MacAddr>, cfg: &Config, images: &Images) -> Problems {
    let mut out = Problems::default();
    machine(new, cfg, images, &mut out);
    let mut all: Vec<Entry> =
        current.iter().filter(|e| replacing.is_none_or(|r| !e.machine.macs.contains(r))).cloned().collect();
    all.push(new.clone());
    let last = all.len() - 1;
    out.0.extend(across_each(&all).into_iter().filter(|(i, _)| *i == last).map(|(_, p)| p));
    out
}

/// Checks across records: a MAC, a fixed address or an instance id belongs to one machine.
pub fn across(entries: &[Entry], out: &mut Problems) {
    for (_, p) in across_each(entries) {
        out.0.push(p);
    }
}

/// [`across`], each problem with the index of the entry it is about (the later of two).
pub fn across_each(entries: &[Entry]) -> Vec<(usize, Problem)> {
    let mut out = Vec::new();
    let mut macs: HashMap<MacAddr, &Entry> = HashMap::new();
    let mut ips: HashMap<Ipv4Addr, &Entry> = HashMap::new();
    let mut ip6s: HashMap<std::net::Ipv6Addr, &Entry> = HashMap::new();
    let mut ids: HashMap<String, &Entry> = HashMap::new();
    for (n, e) in entries.iter().enumerate() {
        let mut report = |e: &Entry, field: &str, what: &str, first: &Entry| out.push((n, dup(e, field, what, first)));
        let m = &e.machine;
        for (i, mac) in m.macs.iter().enumerate() {
            if m.macs[..i].contains(mac) {
                continue; // reported by `machine`
            }
            if let Some(first) = macs.insert(*mac, e) {
                report(e, &format!("macs[{i}]"), &format!("MAC {mac}"), first);
                macs.insert(*mac, first);
            }
        }
        if let Some(ip) = &m.ip {
            if let Some(first) = ips.insert(ip.address, e) {
                report(e, "ip.address", &format!("address {}", ip.address), first);
                ips.insert(ip.address, first);
            }
        }
        if let Some(ip) = &m.ip6 {
            if let Some(first) = ip6s.insert(ip.address, e) {
                report(e, "ip6.address", &format!("address {}", ip.address), first);
                ip6s.insert(ip.address, first);
            }
        }
        let id = m.instance_id();
        if let Some(first) = ids.insert(id.clone(), e) {
            report(e, "instance_id", &format!("instance id {id:?}"), first);
            ids.insert(id, first);
        }
    }
    out
}

fn dup(e: &Entry, field: &str, what: &str, first: &Entry) -> Problem {
    Problem::new(
        &e.source.file,
        e.source.field(field),
        format!("{what} is already used by {} ({})", first.machine.hostname, first.source.describe()),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::inventory::load::parse_file;

    fn cfg() -> Config {
        let mut c = crate::config::sample();
        c.dhcp.pool = Some(crate::config::Pool {
            start: "192.0.2.100".parse().unwrap(),
            end: "192.0.2.199".parse().unwrap(),
            prefix: 24,
            gateway: None,
            dns: vec![],
        });
        c
    }

    fn images() -> Images {
        crate::inventory::images::test_images("debian-12")
    }

    fn problems_of(json: &str) -> Vec<String> {
        let mut p = Problems::default();
        let entries = parse_file(Path::new("m.json"), json, &mut p);
        assert!(p.is_empty(), "{p}");
        for e in &entries {
            machine(e, &cfg(), &images(), &mut p);
        }
        p.iter().map(|p| format!("{}: {}", p.field, p.what)).collect()
    }

    #[test]
    fn good_record_passes() {
        let p = problems_of(
            r#"{"hostname":"n1","macs":["52:54:00:00:00:01"],"ip":{"address":"192.0.2.10","prefix":24,"gateway":"192.0.2.1"},
                "netboot":{"allow":true,"kernel_args":"quiet"},"install":{"image":{"name":"debian-12"}},
                "ssh_keys":["ssh-ed25519 AAAA ops"]}"#,
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn every_field_problem_is_reported() {
        let p = problems_of(
            r#"{"hostname":"n_1","instance_id":"a b","site":"FRA_1","labels":{"rack":"r 1","-x":"y","example.com/role":"db"},"macs":["01:00:5e:00:00:01","52:54:00:00:00:01","52:54:00:00:00:01"],
                "ip":{"address":"192.0.2.150","prefix":24,"gateway":"198.51.100.1"},
                "netboot":{"allow":true,"ipxe_script":"shell","ipxe_script_url":"http://x/${mac}","kernel_args":"a\nb"},
                "install":{"image":{"name":"ubuntu","sha256":"00"},"disk":{"path":"sda","min_size":10,"max_size":5},
                           "gpt":{"layout":[{"name":"root","type":"ext4","size":"rest"},{"name":"b","type":"esp","size":"1MiB"}]}},
                "ssh_keys":["AAAA"]}"#,
        );
        let fields: Vec<&str> = p.iter().map(|s| s.split(':').next().unwrap()).collect();
        assert_eq!(
            fields,
            [
                "hostname",
                "instance_id",
                "site",
                "labels[\"-x\"]",
                "labels[\"rack\"]",
                "macs[0]",
                "macs[2]",
                "ip.address",
                "ip.gateway",
                "netboot.ipxe_script_url",
                "netboot.ipxe_script_url",
                "netboot.kernel_args",
                "install.image.name",
                "install.image.sha256",
                "install.disk.path",
                "install.disk.max_size",
                "install.gpt.layout",
                "install.gpt.layout[0].type",
                "install.gpt.layout[0].size",
                "ssh_keys[0]",
            ],
            "{p:#?}"
        );
        assert!(p[12].contains("known: debian-12"), "{}", p[12]);
        assert!(p[4].contains("\"r 1\" is not a label value"), "{}", p[4]);
    }

    #[test]
    fn nothing_to_install_and_no_address() {
        let p = problems_of(r#"{"hostname":"n1","macs":["52:54:00:00:00:01"],"netboot":{"allow":true}}"#);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("install: missing"), "{p:?}");
        let mut c = cfg();
        c.dhcp.pool = None;
        let mut out = Problems::default();
        let e = parse_file(Path::new("m.json"), r#"{"hostname":"n1","macs":["52:54:00:00:00:01"]}"#, &mut out);
        machine(&e[0], &c, &images(), &mut out);
        assert_eq!(out.0[0].field, "ip");
    }

    #[test]
    fn bmc_problems_name_the_field() {
        let p = problems_of(
            r#"{"hostname":"n1","macs":["52:54:00:00:00:01"],
                "bmc":{"protocol":"redfish","address":"https://admin:pw@192.0.2.5","credentials":"/nonexistent/bmc.json"}}"#,
        );
        let fields: Vec<&str> = p.iter().map(|s| s.split(':').next().unwrap()).collect();
        assert_eq!(fields, ["bmc.address", "bmc.credentials"], "{p:?}");
        assert!(!p[0].contains("pw@"), "{p:?}");
        let mut out = Problems::default();
        parse_file(
            Path::new("m.json"),
            r#"{"hostname":"n1","macs":[],"bmc":{"protocol":"amt","address":"x","credentials":"/c"}}"#,
            &mut out,
        );
        assert_eq!(out.0[0].field, "bmc.protocol", "{out}");
    }

    /// An x86_64 machine (`arch` absent or said) never gets an arm64 image, nor an arm64
    /// machine an x86_64 one (a manifest without `arch` is x86_64): the problem names the
    /// machine, both architectures and the image, and the images that would fit.
    #[test]
    fn an_image_of_another_architecture_is_refused() {
        use crate::inventory::model::Arch;
        let mut images = images();
        let mut arm = images["debian-12"].clone();
        arm.name = "debian-12-arm64".into();
        arm.arch = Arch::Aarch64;
        images.insert(arm.name.clone(), arm);
        let problems = |arch: &str, image: &str, images: &Images| {
            let json = format!(
                r#"{{"hostname":"n1","macs":["52:54:00:00:00:01"],{arch}"install":{{"image":{{"name":"{image}"}}}}}}"#
            );
            let mut p = Problems::default();
            let entries = parse_file(Path::new("n1.json"), &json, &mut p);
            assert!(p.is_empty(), "{p}");
            machine(&entries[0], &cfg(), images, &mut p);
            p.iter().map(|p| format!("{}: {}", p.field, p.what)).collect::<Vec<_>>()
        };
        for arch in ["", r#""arch":"x86_64","#] {
            assert_eq!(problems(arch, "debian-12", &images), Vec::<String>::new());
            let p = problems(arch, "debian-12-arm64", &images);
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(
                p[0].starts_with(
                    "install.image.name: machine n1 is x86_64 (its record's \"arch\", absent meaning x86_64) \
                     but image \"debian-12-arm64\" is aarch64 (\"arch\" in debian-12-arm64.json"
                ),
                "{p:?}"
            );
            assert!(p[0].ends_with("(its x86_64 images: debian-12)"), "{p:?}");
        }
        let arm = r#""arch":"aarch64","#;
        assert_eq!(problems(arm, "debian-12-arm64", &images), Vec::<String>::new());
        let p = problems(arm, "debian-12", &images);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("machine n1 is aarch64") && p[0].contains("image \"debian-12\" is x86_64"), "{p:?}");
        assert!(p[0].ends_with("(its aarch64 images: debian-12-arm64)"), "{p:?}");
        // No image of its architecture at all.
        images.remove("debian-12-arm64");
        assert!(problems(arm, "debian-12", &images)[0].ends_with("(its aarch64 images: none)"));
    }

    #[test]
    fn image_by_url_needs_a_checksum() {
        let p = problems_of(
            r#"{"hostname":"n1","macs":["52:54:00:00:00:01"],"install":{"image":{"url":"http://192.0.2.9/x.raw"}}}"#,
        );
        assert_eq!(
            p,
            ["install.image.sha256: missing: an image given by URL needs its sha256 (or checksums_url, or a file of artifacts.images_dir by that name, whose manifest gives it)"]
        );
        // A file of artifacts.images_dir: its manifest gives the digest.
        let p = problems_of(
            r#"{"hostname":"n1","macs":["52:54:00:00:00:01"],"install":{"image":{"url":"http://192.0.2.9/images/debian-12.raw.zst"}}}"#,
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn checksums_url_instead_of_sha256() {
        let rec = |img: &str| {
            problems_of(&format!(r#"{{"hostname":"n1","macs":["52:54:00:00:00:01"],"install":{{"image":{img}}}}}"#))
        };
        let sums = r#""checksums_url":"https://v.example.org/SHA256SUMS""#;
        assert!(rec(&format!(r#"{{"url":"https://v.example.org/d.qcow2",{sums}}}"#)).is_empty());
        assert!(rec(&format!(
            r#"{{"url":"https://v.example.org/d.qcow2",{sums},"signature_url":"https://v.example.org/SHA256SUMS.gpg"}}"#
        ))
        .is_empty());
        let sha = "ab".repeat(32);
        assert_eq!(
            rec(&format!(r#"{{"url":"https://v.example.org/d.qcow2",{sums},"sha256":"{sha}"}}"#)),
            ["install.image.checksums_url: give sha256 or checksums_url, not both"]
        );
        assert_eq!(
            rec(&format!(
                r#"{{"url":"https://v.example.org/d.qcow2","sha256":"{sha}","signature_url":"https://v.example.org/s"}}"#
            )),
            ["install.image.signature_url: signs a checksums_url: give that too"]
        );
        assert_eq!(
            rec(&format!(r#"{{"url":"https://v.example.org/",{sums}}}"#)),
            ["install.image.url: ends in no file name to look up in the checksums file"]
        );
    }

    #[test]
    fn steps_are_checked_with_their_fields() {
        let rec = |steps: &str| {
            problems_of(&format!(
                r#"{{"hostname":"n1","macs":["52:54:00:00:00:01"],"install":{{"image":{{"name":"debian-12"}},"steps":{steps}}}}}"#
            ))
        };
        assert!(rec(r#"[{"write_file":{"path":"/etc/motd","content":"hi"}},{"run":{"command":["true"]}}]"#).is_empty());
        assert_eq!(
            rec(r#"[{"run":{"command":["true"]}},{"write_file":{"path":"/etc/../shadow","content":"x"},"run":{"command":["x"]}},{"write_file":{"path":"/a/../b","content":"x"}},{"run":{"command":[],"timeout_secs":0}}]"#),
            [
                "install.steps[1]: give write_file or run, not both",
                "install.steps[2].write_file.path: \"/a/../b\" has a `..` component: paths stay beneath the installed root",
                "install.steps[3].run.command: is empty: give the program and its arguments",
                "install.steps[3].run.timeout_secs: 0: 1 to 86400 seconds",
            ]
        );
        // Unknown fields of a step are errors of the record, named.
        let mut p = Problems::default();
        parse_file(
            Path::new("m.json"),
            r#"{"hostname":"n1","macs":["52:54:00:00:00:01"],"install":{"image":{"name":"debian-12"},"steps":[{"run":{"command":["x"],"shell":true}}]}}"#,
            &mut p,
        );
        assert_eq!(p.0[0].field, "install.steps[0].run.shell", "{p}");
    }

    #[test]
    fn duplicates_across_files_name_both() {
        let mut p = Problems::default();
        let mk = |file: &str, json: &str, p: &mut Problems| parse_file(Path::new(file), json, p);
        let mut entries = mk(
            "a.json",
            r#"{"hostname":"a","macs":["52:54:00:00:00:01"],"ip":{"address":"192.0.2.10","prefix":24},"ip6":{"address":"2001:db8::10","prefix":64}}"#,
            &mut p,
        );
        entries.extend(mk(
            "b.json",
            r#"{"hostname":"b","instance_id":"i-525400000001","macs":["52:54:00:00:00:02","52:54:00:00:00:01"],"ip":{"address":"192.0.2.10","prefix":24},"ip6":{"address":"2001:db8::10","prefix":64}}"#,
            &mut p,
        ));
        across(&entries, &mut p);
        let got: Vec<String> = p.iter().map(|x| format!("{}: {}", x.file.display(), x.field)).collect();
        assert_eq!(got, ["b.json: macs[1]", "b.json: ip.address", "b.json: ip6.address", "b.json: instance_id"]);
        assert!(p.0[0].what.contains("already used by a (a.json)"), "{p}");
    }
}
