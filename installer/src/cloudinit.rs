//! Seed cloud-init in the installed system: find its root filesystem, mount it, write the
//! NoCloud seed and a datasource setting, unmount (also on error).
//!
//! Written into the root filesystem:
//! - `/var/lib/cloud/seed/nocloud/{meta-data,user-data,network-config,vendor-data}` from
//!   the metadata (meta-data generated from instance id, hostname and SSH keys when bootsvc
//!   gave none);
//! - `/etc/cloud/cloud.cfg.d/90-osie.cfg`: `datasource_list` with NoCloud first (the seed
//!   is found without network), Ec2 pointed at bootsvc's EC2-compatible tree
//!   (`metadata_base_url`) as the live fallback, and `phone_home` to `phone_home_url` so the
//!   installed OS reports its first boot.
//!
//! The two URLs name the bootsvc instance in use when the seed is written ([`on_current`]),
//! not necessarily the one the metadata came from: after a failover that one may be gone.
//!
//! YAML is written as JSON scalars (valid YAML), so no value can break the document.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use osie_api::Metadata;

use crate::gpt::{self, Part};
use crate::servers::Servers;
use crate::target::Target;

pub const SEED_DIR: &str = "var/lib/cloud/seed/nocloud";
pub const CFG_FILE: &str = "etc/cloud/cloud.cfg.d/90-osie.cfg";

/// Filesystems the installer can mount to seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fs {
    Ext4,
    Xfs,
    Btrfs,
}

impl Fs {
    pub fn kernel_name(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
            Fs::Btrfs => "btrfs",
        }
    }
}

/// The filesystem and label of a superblock region: the first 68 KiB of a partition.
pub fn probe(head: &[u8]) -> Option<(Fs, String)> {
    let label = |b: &[u8]| String::from_utf8_lossy(b).trim_end_matches('\0').trim().to_string();
    if head.len() >= 1024 + 136 && head[1024 + 56..1024 + 58] == [0x53, 0xef] {
        return Some((Fs::Ext4, label(&head[1024 + 120..1024 + 136])));
    }
    if head.len() >= 120 && &head[0..4] == b"XFSB" {
        return Some((Fs::Xfs, label(&head[108..120])));
    }
    const B: usize = 0x10000;
    if head.len() >= B + 0x12b + 256 && &head[B + 0x40..B + 0x48] == b"_BHRfS_M" {
        return Some((Fs::Btrfs, label(&head[B + 0x12b..B + 0x12b + 256])));
    }
    None
}

const ROOT_LABELS: [&str; 3] = ["root", "cloudimg-rootfs", "rootfs"];

/// Which partition is the root filesystem: GPT type "Linux root (x86-64)" first, then a
/// root-like label, then the largest Linux filesystem we can mount.
pub fn pick_root(parts: &[(Part, Option<(Fs, String)>)]) -> Option<&(Part, Option<(Fs, String)>)> {
    let mountable = || parts.iter().filter(|(_, fs)| fs.is_some());
    mountable()
        .find(|(p, _)| p.type_guid == gpt::LINUX_ROOT_X86_64)
        .or_else(|| mountable().find(|(_, fs)| fs.as_ref().is_some_and(|(_, l)| ROOT_LABELS.contains(&l.as_str()))))
        .or_else(|| mountable().filter(|(p, _)| p.type_guid == gpt::LINUX_FS).max_by_key(|(p, _)| p.len))
}

/// The files of the seed, as (path relative to the root, contents, mode).
pub fn files(md: &Metadata) -> Vec<(String, String, u32)> {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let ci = &md.cloud_init;
    let meta = ci.meta_data.clone().unwrap_or_else(|| {
        let mut m = format!("instance-id: {}\nlocal-hostname: {}\n", q(&md.instance_id), q(&md.hostname));
        if !md.ssh_keys.is_empty() {
            m.push_str("public-keys:\n");
            for k in &md.ssh_keys {
                m.push_str(&format!("  - {}\n", q(k)));
            }
        }
        m
    });
    let mut out = vec![
        (format!("{SEED_DIR}/meta-data"), meta, 0o600),
        (format!("{SEED_DIR}/user-data"), ci.user_data.clone().unwrap_or_else(|| "#cloud-config\n".into()), 0o600),
    ];
    if let Some(n) = &ci.network_config {
        out.push((format!("{SEED_DIR}/network-config"), n.clone(), 0o600));
    }
    if let Some(v) = &ci.vendor_data {
        out.push((format!("{SEED_DIR}/vendor-data"), v.clone(), 0o600));
    }
    let mut cfg = String::from("# Written by the osie installer.\ndatasource_list: [NoCloud, Ec2, None]\n");
    if let Some(u) = &md.metadata_base_url {
        cfg.push_str(&format!(
            "datasource:\n  Ec2:\n    metadata_urls: [{}]\n    strict_id: false\n    max_wait: 30\n    timeout: 5\n",
            q(u.trim_end_matches('/'))
        ));
    }
    if let Some(u) = &md.phone_home_url {
        cfg.push_str(&format!("phone_home:\n  url: {}\n  post: all\n  tries: 10\n", q(u)));
    }
    out.push((CFG_FILE.to_string(), cfg, 0o644));
    out
}

/// `md` with its metadata and phone-home URLs on the instance in use (when they are on one
/// of `servers`' bases), so the installed OS's cloud-init and phone-home reach an instance
/// that answered last, not the one that may have died since the metadata came.
pub fn on_current(md: &Metadata, servers: &Servers) -> Metadata {
    let mut md = md.clone();
    md.metadata_base_url = md.metadata_base_url.map(|u| servers.on_current(&u));
    md.phone_home_url = md.phone_home_url.map(|u| servers.on_current(&u));
    md
}

/// What was seeded where.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub partition: u32,
    pub fs: Fs,
    pub files: Vec<String>,
}

/// Find the root filesystem on the (already partitioned) disk, mount it, write the seed.
pub fn seed(t: &Target, md: &Metadata) -> Result<Seeded> {
    let m = Mounted::root(t)?;
    let mut written = Vec::new();
    for (rel, contents, mode) in files(md) {
        let path = m.mnt.dir.join(&rel);
        write_file(&path, &contents, mode).with_context(|| format!("writing /{rel} in the installed system"))?;
        written.push(format!("/{rel}"));
    }
    let (partition, fs) = (m.partition, m.fs);
    m.unmount()?;
    Ok(Seeded { partition, fs, files: written })
}

/// A filesystem of the installed disk, mounted on a private directory: the root filesystem
/// ([`pick_root`]), or a partition named by its number. Unmounted by [`Mounted::unmount`],
/// or on drop.
pub(crate) struct Mounted {
    pub(crate) partition: u32,
    pub(crate) fs: Fs,
    pub(crate) mnt: Mount,
    _node: PartNode,
}

impl Mounted {
    /// The root filesystem.
    pub(crate) fn root(t: &Target) -> Result<Mounted> {
        Mounted::find(t, None)
    }

    /// Partition `number`'s filesystem (ext4, xfs or btrfs).
    pub(crate) fn partition(t: &Target, number: u32) -> Result<Mounted> {
        Mounted::find(t, Some(number))
    }

    fn find(t: &Target, number: Option<u32>) -> Result<Mounted> {
        let gpt = gpt::read(t)?;
        let mut probed = Vec::new();
        for p in gpt::list(&gpt) {
            let mut head = vec![0u8; 0x10000 + 4096];
            let n = head.len().min(p.len as usize);
            use std::os::unix::fs::FileExt;
            t.file.read_exact_at(&mut head[..n], p.start).with_context(|| format!("reading partition {}", p.number))?;
            let fs = probe(&head[..n]);
            probed.push((p, fs));
        }
        let chosen = match number {
            None => pick_root(&probed),
            Some(n) => probed.iter().find(|(p, _)| p.number == n),
        };
        let seen = || -> String {
            let v: Vec<String> = probed
                .iter()
                .map(|(p, fs)| format!("#{} {:?} type {} {:?}", p.number, p.name, p.type_guid, fs))
                .collect();
            v.join(", ")
        };
        let Some((root, fs)) = chosen else {
            match number {
                None => bail!(
                    "no root filesystem (ext4, xfs or btrfs; Linux root or Linux filesystem type) among {}",
                    seen()
                ),
                Some(n) => bail!("the disk has no partition {n}; it has {}", seen()),
            }
        };
        let Some((fs, label)) = fs.clone() else {
            bail!("partition {} holds no filesystem the installer mounts (ext4, xfs or btrfs)", root.number);
        };
        tracing::info!("filesystem: partition {} ({}, label {label:?})", root.number, fs.kernel_name());
        if fs == Fs::Ext4 {
            // A filesystem block smaller than the disk's sector cannot be mounted (EINVAL).
            let mut sb = [0u8; 4];
            use std::os::unix::fs::FileExt;
            t.file.read_exact_at(&mut sb, root.start + 1024 + 24)?;
            let block = 1024u64 << u32::from_le_bytes(sb).min(16);
            if block < u64::from(t.logical_sector) {
                bail!(
                    "the filesystem of partition {} has {block}-byte blocks, smaller than the {}-byte sectors of {}: it cannot be mounted there; use an image made for 4K-sector disks",
                    root.number,
                    t.logical_sector,
                    t.path.display()
                );
            }
        }
        let node = PartNode::create(t, root)?;
        let mnt = Mount::new(&node.path, fs)?;
        Ok(Mounted { partition: root.number, fs, mnt, _node: node })
    }

    pub(crate) fn unmount(self) -> Result<()> {
        self.mnt.unmount()
    }
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    }
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// A device node for one partition, found by its `major:minor` in sysfs: the kernel's own
/// `/dev/<name>` when devtmpfs made it (the initramfs), else a private node made with
/// mknod, so the seed does not wait for udev or depend on `/dev` naming (`sda1`,
/// `nvme0n1p1`, `loop3p1`). The private node is the fallback only: its directory is under
/// `/run`, which PID 1 mounts `nodev` (a node there cannot be opened).
pub(crate) struct PartNode {
    /// The private directory holding a node we made; `None` for the kernel's node.
    dir: Option<PathBuf>,
    pub(crate) path: PathBuf,
}

impl PartNode {
    pub(crate) fn create(t: &Target, p: &Part) -> Result<PartNode> {
        let name = crate::disk::kernel_name(&t.path)?;
        let sys = Path::new("/sys/class/block").join(&name);
        let listed = || -> Result<Option<(String, String)>> {
            Ok(crate::disk::sysfs::read_disk(&sys, &name)?
                .partitions
                .into_iter()
                .find(|sp| sp.start == p.start)
                .map(|sp| (sp.name, sp.dev)))
        };
        let (part_name, dev) = match listed()? {
            Some(d) => d,
            None => {
                tracing::info!(
                    "the kernel did not list {name} partition {} after BLKRRPART; adding it with BLKPG",
                    p.number
                );
                crate::target::ioctl::add_partition(&t.file, p.number, p.start, p.len)
                    .with_context(|| format!("adding partition {} of {name} (BLKPG)", p.number))?;
                listed()?.with_context(|| format!("the kernel lists no partition of {name} at byte {}", p.start))?
            }
        };
        let (maj, min) = dev.split_once(':').with_context(|| format!("bad dev {dev:?}"))?;
        let (maj, min): (u64, u64) = (maj.parse()?, min.parse()?);
        let rdev = nix::sys::stat::makedev(maj, min);
        let kernels = Path::new("/dev").join(&part_name);
        if let Ok(st) = nix::sys::stat::stat(&kernels) {
            if st.st_mode & libc::S_IFMT == libc::S_IFBLK && st.st_rdev == rdev {
                return Ok(PartNode { dir: None, path: kernels });
            }
        }
        let dir = private_dir("part")?;
        let path = dir.join(format!("{name}-{}", p.number));
        nix::sys::stat::mknod(
            &path,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            rdev,
        )
        .with_context(|| format!("creating a device node for {name} partition {}", p.number))?;
        Ok(PartNode { dir: Some(dir), path })
    }
}

impl Drop for PartNode {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = fs::remove_file(&self.path);
            let _ = fs::remove_dir(dir);
        }
    }
}

fn private_dir(what: &str) -> Result<PathBuf> {
    let base = if Path::new("/run").is_dir() { PathBuf::from("/run") } else { std::env::temp_dir() };
    let dir = base.join(format!("osie-{what}-{}", crate::image::hex(&crate::random::bytes::<6>())));
    fs::DirBuilder::new().mode(0o700).create(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A mounted filesystem, unmounted on drop if [`Mount::unmount`] was not reached.
pub(crate) struct Mount {
    pub(crate) dir: PathBuf,
    mounted: bool,
}

impl Mount {
    fn new(dev: &Path, fs: Fs) -> Result<Mount> {
        Mount::with_type(dev, fs.kernel_name(), nix::mount::MsFlags::MS_NOATIME, None)
    }

    /// Mount `dev` as `fstype` on a private directory, with mount options `data`.
    pub(crate) fn with_type(dev: &Path, fstype: &str, flags: nix::mount::MsFlags, data: Option<&str>) -> Result<Mount> {
        let dir = private_dir("mnt")?;
        let r = nix::mount::mount(Some(dev), &dir, Some(fstype), flags, data);
        if let Err(e) = r {
            let _ = fs::remove_dir(&dir);
            bail!("mounting {} ({fstype}) on {}: {e}", dev.display(), dir.display());
        }
        Ok(Mount { dir, mounted: true })
    }

    pub(crate) fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        nix::mount::umount(&self.dir).with_context(|| format!("unmounting {}", self.dir.display()))?;
        let _ = fs::remove_dir(&self.dir);
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            if nix::mount::umount(&self.dir).is_err() {
                let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
            }
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osie_api::CloudInit;

    fn md() -> Metadata {
        Metadata {
            instance_id: "i-1".into(),
            hostname: "node\"1".into(),
            mac: "52:54:00:00:00:01".parse().unwrap(),
            install: None,
            erase: None,
            cloud_init: CloudInit { user_data: Some("#cloud-config\nruncmd: [true]\n".into()), ..Default::default() },
            ssh_keys: vec!["ssh-ed25519 AAAA test@x".into()],
            metadata_base_url: Some("http://192.0.2.1:8080/m/".into()),
            phone_home_url: Some("http://192.0.2.1:8080/phone-home/$INSTANCE_ID".into()),
        }
    }

    #[test]
    fn seed_files() {
        let f = files(&md());
        let get = |p: &str| f.iter().find(|(r, _, _)| r.ends_with(p)).map(|(_, c, _)| c.clone()).unwrap();
        assert_eq!(
            get("meta-data"),
            "instance-id: \"i-1\"\nlocal-hostname: \"node\\\"1\"\npublic-keys:\n  - \"ssh-ed25519 AAAA test@x\"\n"
        );
        assert_eq!(get("user-data"), "#cloud-config\nruncmd: [true]\n");
        assert!(!f.iter().any(|(r, _, _)| r.ends_with("network-config")), "only written when given");
        let cfg = get("90-osie.cfg");
        assert!(cfg.contains("datasource_list: [NoCloud, Ec2, None]"), "{cfg}");
        assert!(cfg.contains("metadata_urls: [\"http://192.0.2.1:8080/m\"]"), "{cfg}");
        assert!(cfg.contains("url: \"http://192.0.2.1:8080/phone-home/$INSTANCE_ID\""), "{cfg}");
    }

    #[test]
    fn after_a_failover_the_seed_names_the_instance_in_use() {
        let s = Servers::parse("http://192.0.2.1:8080,http://192.0.2.2:8080").unwrap();
        let mut m = md();
        m.metadata_base_url = Some("http://192.0.2.1:8080".into());
        let cfg = |m: &Metadata| files(m).into_iter().find(|(r, _, _)| r == CFG_FILE).unwrap().1;
        assert_eq!(cfg(&on_current(&m, &s)), cfg(&m), "no failover: as bootsvc gave them");
        s.failed(0, "connection reset");
        let moved = cfg(&on_current(&m, &s));
        assert!(moved.contains("metadata_urls: [\"http://192.0.2.2:8080\"]"), "{moved}");
        assert!(moved.contains("url: \"http://192.0.2.2:8080/phone-home/$INSTANCE_ID\""), "{moved}");
        assert!(!moved.contains("192.0.2.1"), "{moved}");
    }

    #[test]
    fn probes_superblocks() {
        let mut h = vec![0u8; 0x10000 + 4096];
        assert_eq!(probe(&h), None);
        h[1024 + 56] = 0x53;
        h[1024 + 57] = 0xef;
        h[1024 + 120..1024 + 124].copy_from_slice(b"root");
        assert_eq!(probe(&h), Some((Fs::Ext4, "root".into())));
        let mut x = vec![0u8; 512];
        x[..4].copy_from_slice(b"XFSB");
        x[108..112].copy_from_slice(b"ROOT");
        assert_eq!(probe(&x), Some((Fs::Xfs, "ROOT".into())));
    }

    #[test]
    fn root_by_type_then_label_then_size() {
        let part =
            |n: u32, t: &str, len: u64| Part { number: n, name: String::new(), type_guid: t.into(), start: 0, len };
        let ext = |l: &str| Some((Fs::Ext4, l.to_string()));
        let parts = vec![
            (part(15, gpt::ESP, 100), None),
            (part(1, gpt::LINUX_FS, 900), ext("data")),
            (part(2, gpt::LINUX_FS, 500), ext("root")),
        ];
        assert_eq!(pick_root(&parts).unwrap().0.number, 2, "label");
        let mut p2 = parts.clone();
        p2.push((part(3, gpt::LINUX_ROOT_X86_64, 10), ext("x")));
        assert_eq!(pick_root(&p2).unwrap().0.number, 3, "type GUID first");
        let p3 = vec![(part(1, gpt::LINUX_FS, 900), ext("a")), (part(2, gpt::LINUX_FS, 50), ext("b"))];
        assert_eq!(pick_root(&p3).unwrap().0.number, 1, "largest");
        assert!(pick_root(&parts[..1]).is_none());
    }
}
