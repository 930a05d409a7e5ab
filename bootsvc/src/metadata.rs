//! What a machine is told about itself, built from its record (pure functions): the native
//! [`Metadata`] for the installer, the EC2-compatible meta-data tree and the NoCloud
//! documents for cloud-init in the installed OS.

use std::net::IpAddr;

use osie_api::metadata::DigestAlgo;
use osie_api::{ErasePlan, Image, InstallPlan, MacAddr, Metadata};

use crate::inventory::checksums::Digest;
use crate::inventory::images::Images;
use crate::inventory::model::{ImageRef, Machine};

/// The install plan with the image resolved (by manifest name, or as given by URL).
/// `None` when the record has no plan, or names an image that no longer exists, or gives its
/// digest by `checksums_url` and `vendor` (the digest [`crate::vendor_sums`] took from that
/// file) is `None`.
pub fn install_plan(m: &Machine, images: &Images, public_url: &str, vendor: Option<&Digest>) -> Option<InstallPlan> {
    let i = m.install.as_ref()?;
    let image = resolve_image(&i.image, images, public_url, vendor)?;
    Some(InstallPlan {
        image,
        disk: i.disk.clone(),
        gpt: i.gpt.clone(),
        finish: i.finish,
        uefi: i.uefi,
        steps: i.steps.clone(),
    })
}

fn resolve_image(r: &ImageRef, images: &Images, public_url: &str, vendor: Option<&Digest>) -> Option<Image> {
    if let Some(name) = &r.name {
        return images.get(name).map(|m| m.to_api(public_url));
    }
    let (sha256, digest_algo) = match (&r.checksums_url, vendor) {
        (Some(_), Some(d)) => (d.hex.clone(), d.algo.into()),
        (Some(_), None) => return None,
        (None, _) => match &r.sha256 {
            Some(s) => (s.to_ascii_lowercase(), DigestAlgo::Sha256),
            // No digest in the record: the manifest of the file the URL names gives it.
            None => {
                let url = r.url.clone()?;
                let m = crate::inventory::images::by_file(images, &url)?;
                let format = if r.format == osie_api::ImageFormat::Auto { m.format.into() } else { r.format };
                return Some(Image { url, format, ..m.to_api(public_url) });
            }
        },
    };
    Some(Image {
        url: r.url.clone()?,
        sha256,
        digest_algo,
        size: r.size,
        raw_size: r.raw_size,
        format: r.format,
        checksum_of: r.checksum_of,
    })
}

/// Why the installer that runs on `installer_arch` (its `X-Osie-Arch`) must not be told to
/// write `m`'s image: the image the record names is of another architecture, so the machine
/// would not boot it. `check` refuses such a record for the record's own `arch`; this catches
/// the machine whose record says the wrong one (absent `arch` is x86_64), which its firmware
/// reveals by booting the other architecture's installer. `None`: no objection (no plan, an
/// image by URL, whose architecture bootsvc does not know, or the right one).
pub fn wrong_arch(m: &Machine, images: &Images, installer_arch: &str) -> Option<String> {
    let name = m.install.as_ref()?.image.name.as_ref()?;
    let image = images.get(name)?;
    if image.arch.as_str() == installer_arch {
        return None;
    }
    Some(format!(
        "machine {} runs the {} installer but image {name:?} is {} (\"arch\" in its manifest): the machine \
         would not boot it; give the record the machine's \"arch\" and an image of that architecture",
        m.hostname,
        crate::trace::clean(installer_arch, 32),
        image.arch.as_str()
    ))
}

/// `GET /metadata` for `m`, booted from `mac`. With `erase` (a deprovisioning asked for),
/// no install plan: the installer erases the disks instead.
pub fn for_installer(
    m: &Machine,
    mac: MacAddr,
    images: &Images,
    public_url: &str,
    vendor: Option<&Digest>,
    erase: Option<ErasePlan>,
) -> Metadata {
    let mut cloud_init = m.cloud_init.clone();
    if cloud_init.meta_data.is_none() {
        cloud_init.meta_data = Some(nocloud_meta_data(m));
    }
    Metadata {
        instance_id: m.instance_id(),
        hostname: m.hostname.clone(),
        mac,
        install: if erase.is_some() { None } else { install_plan(m, images, public_url, vendor) },
        erase,
        cloud_init,
        ssh_keys: m.ssh_keys.clone(),
        metadata_base_url: Some(public_url.to_string()),
        phone_home_url: Some(phone_home_url(m, public_url)),
    }
}

/// Where cloud-init's `phone_home` module in the installed OS posts (form-encoded).
pub fn phone_home_url(m: &Machine, public_url: &str) -> String {
    format!("{public_url}/phone-home/{}", m.instance_id())
}

/// NoCloud `meta-data` (YAML): the record's own, or instance-id, hostname and SSH keys.
/// Strings are written as JSON strings, which YAML reads as double-quoted scalars: no value
/// can add keys.
pub fn nocloud_meta_data(m: &Machine) -> String {
    if let Some(md) = &m.cloud_init.meta_data {
        return md.clone();
    }
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut s = format!(
        "instance-id: {}\nlocal-hostname: {}\nhostname: {}\n",
        q(&m.instance_id()),
        q(&m.hostname),
        q(&m.hostname)
    );
    if !m.ssh_keys.is_empty() {
        s += "public-keys:\n";
        for k in &m.ssh_keys {
            s += &format!("  - {}\n", q(k));
        }
    }
    s
}

/// One answer from the EC2 meta-data tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ec2 {
    /// A directory listing: one entry per line, sub-directories with a trailing `/`.
    Listing(Vec<String>),
    Value(String),
    NotFound,
}

impl Ec2 {
    pub fn body(&self) -> Option<String> {
        match self {
            Ec2::Listing(v) => Some(v.join("\n")),
            Ec2::Value(v) => Some(v.clone()),
            Ec2::NotFound => None,
        }
    }
}

/// `…/meta-data/<path>` for `m`, called from `ip` (its `local-ipv4` when the record has no
/// `ip`; over IPv6, its `ipv6`). `path` is relative (`""`, `instance-id`,
/// `public-keys/0/openssh-key`); trailing slashes are ignored.
pub fn ec2_meta_data(m: &Machine, ip: IpAddr, path: &str) -> Ec2 {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let local_ipv4 = m.ip.as_ref().map(|i| i.address).or(match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    });
    let ipv6 = m.ip6.as_ref().map(|i| i.address).or(match ip {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    });
    let mac = m.boot_mac().map(|m| m.to_string()).unwrap_or_default();
    match parts.as_slice() {
        [] => {
            let mut v: Vec<String> = ["hostname", "instance-id", "local-hostname"].map(String::from).to_vec();
            if local_ipv4.is_some() {
                v.push("local-ipv4".into());
            }
            if ipv6.is_some() {
                v.push("ipv6".into());
            }
            v.push("mac".into());
            if !m.ssh_keys.is_empty() {
                v.push("public-keys/".into());
            }
            Ec2::Listing(v)
        }
        ["instance-id"] => Ec2::Value(m.instance_id()),
        ["hostname"] | ["local-hostname"] => Ec2::Value(m.hostname.clone()),
        ["local-ipv4"] => local_ipv4.map_or(Ec2::NotFound, |a| Ec2::Value(a.to_string())),
        ["ipv6"] => ipv6.map_or(Ec2::NotFound, |a| Ec2::Value(a.to_string())),
        ["mac"] => Ec2::Value(mac),
        ["public-keys"] if !m.ssh_keys.is_empty() => {
            // EC2 lists `<index>=<key name>`; cloud-init then reads `<index>/openssh-key`.
            Ec2::Listing(m.ssh_keys.iter().enumerate().map(|(i, k)| format!("{i}={}", key_name(k, i))).collect())
        }
        ["public-keys", i] => match key_at(m, i) {
            Some(_) => Ec2::Listing(vec!["openssh-key".into()]),
            None => Ec2::NotFound,
        },
        ["public-keys", i, "openssh-key"] => key_at(m, i).map_or(Ec2::NotFound, |k| Ec2::Value(k.to_string())),
        _ => Ec2::NotFound,
    }
}

fn key_at<'a>(m: &'a Machine, i: &str) -> Option<&'a str> {
    m.ssh_keys.get(i.parse::<usize>().ok()?).map(String::as_str)
}

/// The key's comment as its name (what EC2 shows), or `key-<i>`.
fn key_name(k: &str, i: usize) -> String {
    let name: String = k
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "@._-".contains(*c))
        .collect();
    if name.is_empty() {
        format!("key-{i}")
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(json: &str) -> Machine {
        (*crate::inventory::load::test_entry(json).machine).clone()
    }

    fn images() -> Images {
        crate::inventory::images::test_images("deb")
    }

    /// The installer's architecture against the image's: an arm64 installer on a machine
    /// whose record (no `arch`: x86_64) names the x86_64 image is refused, and the reverse;
    /// an unknown architecture matches no image; images by URL are not judged.
    #[test]
    fn an_installer_is_refused_an_image_of_another_architecture() {
        use crate::inventory::model::Arch;
        let mut images = images();
        let mut arm = images["deb"].clone();
        (arm.name, arm.arch) = ("deb-arm64".into(), Arch::Aarch64);
        images.insert(arm.name.clone(), arm);
        let rec = |image: &str| {
            machine(&format!(r#"{{"hostname":"n1","macs":["52:54:00:00:00:01"],"install":{{"image":{image}}}}}"#))
        };
        let x86 = rec(r#"{"name":"deb"}"#);
        assert_eq!(wrong_arch(&x86, &images, "x86_64"), None);
        assert_eq!(
            wrong_arch(&x86, &images, "aarch64").as_deref(),
            Some(
                "machine n1 runs the aarch64 installer but image \"deb\" is x86_64 (\"arch\" in its manifest): the \
                 machine would not boot it; give the record the machine's \"arch\" and an image of that architecture"
            )
        );
        let arm = rec(r#"{"name":"deb-arm64"}"#);
        assert_eq!(wrong_arch(&arm, &images, "aarch64"), None);
        assert!(wrong_arch(&arm, &images, "x86_64")
            .unwrap()
            .contains("runs the x86_64 installer but image \"deb-arm64\" is aarch64"));
        let odd = wrong_arch(&arm, &images, "riscv64\nforged: line").unwrap();
        assert!(odd.contains("runs the riscv64") && !odd.contains('\n'), "{odd}");
        let url = rec(&format!(r#"{{"url":"http://192.0.2.9/x.raw","sha256":"{}"}}"#, "ab".repeat(32)));
        assert_eq!(wrong_arch(&url, &images, "aarch64"), None);
        assert_eq!(wrong_arch(&machine(r#"{"hostname":"n1","macs":["52:54:00:00:00:01"]}"#), &images, "aarch64"), None);
    }

    #[test]
    fn installer_metadata_resolves_the_image() {
        let m = machine(
            r#"{"hostname":"n1","macs":["52:54:00:00:00:01"],"install":{"image":{"name":"deb"},"finish":"kexec",
                "steps":[{"write_file":{"path":"/etc/motd","content":"hi","mode":"0600"}}]},
                "ssh_keys":["ssh-ed25519 AAAA ops@example"]}"#,
        );
        let md = for_installer(&m, m.macs[0], &images(), "http://192.0.2.1:8080", None, None);
        // The steps reach the installer as written (the api type on both sides).
        let wire = serde_json::to_value(&md).unwrap();
        assert_eq!(
            wire["install"]["steps"],
            serde_json::json!([{"write_file":{"path":"/etc/motd","content":"hi","mode":"0600"}}])
        );
        assert_eq!(md.erase, None);
        let erase = Some(ErasePlan { removable: true });
        let erasing = for_installer(&m, m.macs[0], &images(), "http://192.0.2.1:8080", None, erase);
        assert_eq!((erasing.install, erasing.erase), (None, erase), "an erase carries no install plan");
        let plan = md.install.unwrap();
        assert_eq!(plan.image.url, "http://192.0.2.1:8080/images/deb.raw.zst");
        assert_eq!(plan.image.sha256, "ab".repeat(32));
        assert_eq!(plan.finish, osie_api::Finish::Kexec);
        assert_eq!(md.instance_id, "i-525400000001");
        assert_eq!(md.phone_home_url.as_deref(), Some("http://192.0.2.1:8080/phone-home/i-525400000001"));
        let meta = md.cloud_init.meta_data.unwrap();
        assert!(meta.contains("instance-id: \"i-525400000001\"\n"), "{meta}");
        assert!(meta.contains("  - \"ssh-ed25519 AAAA ops@example\"\n"), "{meta}");
    }

    #[test]
    fn hostile_values_stay_scalars_in_meta_data() {
        let mut m = machine(r#"{"hostname":"n1","macs":["52:54:00:00:00:01"]}"#);
        m.instance_id = Some("x\"\nuser-data: evil".into());
        let md = nocloud_meta_data(&m);
        assert_eq!(md.lines().count(), 3, "{md}");
        assert!(md.starts_with("instance-id: \"x\\\"\\nuser-data: evil\"\n"), "{md}");
    }

    #[test]
    fn ec2_tree() {
        let m = machine(
            r#"{"hostname":"n1","macs":["52:54:00:00:00:01"],"ssh_keys":["ssh-ed25519 AAAA ops@example","ssh-rsa BBBB"]}"#,
        );
        let ip = IpAddr::from([192, 0, 2, 55]);
        assert_eq!(
            ec2_meta_data(&m, ip, "").body().unwrap(),
            "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\nmac\npublic-keys/"
        );
        assert_eq!(ec2_meta_data(&m, ip, "local-ipv4/"), Ec2::Value("192.0.2.55".into()));
        assert_eq!(ec2_meta_data(&m, ip, "public-keys").body().unwrap(), "0=ops@example\n1=key-1");
        assert_eq!(ec2_meta_data(&m, ip, "public-keys/1/").body().unwrap(), "openssh-key");
        assert_eq!(ec2_meta_data(&m, ip, "public-keys/1/openssh-key"), Ec2::Value("ssh-rsa BBBB".into()));
        assert_eq!(ec2_meta_data(&m, ip, "public-keys/2/openssh-key"), Ec2::NotFound);
        assert_eq!(ec2_meta_data(&m, ip, "placement/"), Ec2::NotFound);
        // Over IPv6: its address as `ipv6`, and no `local-ipv4` it does not have.
        let ip6: IpAddr = "2001:db8::55".parse().unwrap();
        assert_eq!(
            ec2_meta_data(&m, ip6, "").body().unwrap(),
            "hostname\ninstance-id\nlocal-hostname\nipv6\nmac\npublic-keys/"
        );
        assert_eq!(ec2_meta_data(&m, ip6, "ipv6"), Ec2::Value("2001:db8::55".into()));
        assert_eq!(ec2_meta_data(&m, ip6, "local-ipv4"), Ec2::NotFound);
    }

    #[test]
    fn image_by_url_passes_through() {
        let m = machine(&format!(
            r#"{{"hostname":"n1","macs":["52:54:00:00:00:01"],"install":{{"image":{{"url":"http://192.0.2.9/x.raw.xz","sha256":"{}","format":"xz"}}}}}}"#,
            "C".repeat(64)
        ));
        let p = install_plan(&m, &images(), "http://s", None).unwrap();
        assert_eq!(p.image.url, "http://192.0.2.9/x.raw.xz");
        assert_eq!(p.image.sha256, "c".repeat(64));
        assert_eq!(p.image.format, osie_api::ImageFormat::Xz);
    }

    #[test]
    fn image_by_checksums_url_takes_the_vendor_digest() {
        let m = machine(
            r#"{"hostname":"n1","macs":["52:54:00:00:00:01"],"install":{"image":{"url":"http://192.0.2.9/d.qcow2","checksums_url":"http://192.0.2.9/SHA512SUMS"}}}"#,
        );
        // No digest (not fetched, or refused): no plan rather than one with an empty digest.
        assert!(install_plan(&m, &images(), "http://s", None).is_none());
        let d = Digest { algo: crate::inventory::checksums::Algo::Sha512, hex: "ef".repeat(64) };
        let p = install_plan(&m, &images(), "http://s", Some(&d)).unwrap();
        assert_eq!((p.image.sha256, p.image.digest_algo), ("ef".repeat(64), DigestAlgo::Sha512));
        assert!(p.image.url.ends_with("/d.qcow2"));
    }
}
