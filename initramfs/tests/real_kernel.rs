//! The builder against the real Debian kernel package `scripts/setup` unpacks into
//! `build/kernel/root`: reproducible bytes, the modules and index the installer needs, and a
//! module index that agrees with what kmod's own `depmod` computes from the same modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use osie_initramfs::compress::{Compression, ModuleCompression};
use osie_initramfs::cpio;
use osie_initramfs::image::{build, Options, DEFAULT_MODULES};
use osie_initramfs::modindex::ModIndex;

fn kernel_root(test: &str) -> Option<PathBuf> {
    let root = osie_testkit::workspace_root().join("build/kernel/root");
    if root.join("lib/modules").is_dir() {
        return Some(root);
    }
    if std::env::var_os("OSIE_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("{test}: {} missing (run scripts/setup)", root.display());
    }
    eprintln!("SKIP {test}: {} missing (run scripts/setup)", root.display());
    None
}

fn options(root: PathBuf, compression: Compression) -> Options {
    Options {
        kernel_root: root,
        release: None,
        // Any ELF stands in for the installer here.
        init: PathBuf::from("/bin/true"),
        modules: DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
        compression,
        level: Some(3),
        module_compression: Default::default(),
    }
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let Some(root) = kernel_root("same_inputs_give_the_same_bytes") else { return };
    let a = build(&options(root.clone(), Compression::Zstd)).unwrap();
    let b = build(&options(root, Compression::Zstd)).unwrap();
    assert_eq!(a.image.len(), b.image.len());
    assert!(a.image == b.image, "two builds from the same inputs differ");
    assert_eq!(&a.image[..4], b"\x28\xb5\x2f\xfd", "zstd frame magic");
}

#[test]
fn archive_holds_init_modules_and_an_index_depmod_agrees_with() {
    let test = "archive_holds_init_modules_and_an_index_depmod_agrees_with";
    let Some(root) = kernel_root(test) else { return };
    if !osie_testkit::require_tools(test, &["depmod"]) {
        return;
    }
    let built = build(&options(root, Compression::None)).unwrap();
    let entries = cpio::read(&built.image).unwrap();
    let by_name: BTreeMap<&str, &cpio::Entry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are written in sorted order");
    assert_eq!(by_name["init"].mode, cpio::S_IFREG | 0o755);
    assert_eq!(by_name["init"].data, std::fs::read("/bin/true").unwrap());
    assert_eq!(by_name["dev/console"].rdev, (5, 1));
    assert_eq!(by_name["sbin/modprobe"].mode, cpio::S_IFLNK | 0o777);
    assert_eq!(by_name["sbin/modprobe"].data, b"/init");
    for d in ["proc", "sys", "dev", "run", "tmp", "etc"] {
        assert_eq!(by_name[d].mode & 0o170000, cpio::S_IFDIR, "{d}");
    }
    for m in ["virtio_net", "virtio_blk", "virtio_pci", "ext4", "nvme", "ahci", "sd_mod", "e1000e", "vfat"] {
        assert!(built.selection.modules.contains_key(m), "{m} missing from the initramfs");
    }
    // ext4's softdep names an alias (crypto-crc32c): its providers come along.
    assert!(built.selection.modules.contains_key("crc32c_generic"));

    // Unpack and let kmod's depmod compute modules.dep and modules.alias from the modules.
    let dir = tempfile::tempdir().unwrap();
    for e in &entries {
        let p = dir.path().join(&e.name);
        match e.mode & 0o170000 {
            cpio::S_IFDIR => std::fs::create_dir_all(&p).unwrap(),
            cpio::S_IFREG => std::fs::write(&p, &e.data).unwrap(),
            _ => {}
        }
    }
    let moddir = dir.path().join("lib/modules").join(&built.release);
    let read = |f: &str| std::fs::read_to_string(moddir.join(f)).unwrap();
    let (ours, bad) = ModIndex::parse(&read("modules.dep"), &read("modules.alias"), &read("modules.softdep"), "");
    assert!(bad.is_empty(), "{bad:?}");
    // depmod (kmod 30 has no -o) overwrites our files in place; ours are parsed already.
    let st = Command::new("depmod").arg("-b").arg(dir.path()).arg(&built.release).status().unwrap();
    assert!(st.success());
    let kread = |f: &str| std::fs::read_to_string(moddir.join(f)).unwrap();
    let (kmod, _) = ModIndex::parse(&kread("modules.dep"), &kread("modules.alias"), &kread("modules.softdep"), "");

    assert_eq!(ours.deps.keys().collect::<Vec<_>>(), kmod.deps.keys().collect::<Vec<_>>());
    for (name, (file, deps)) in &ours.deps {
        let (kfile, kdeps) = &kmod.deps[name];
        assert_eq!(file, kfile);
        let a: BTreeSet<&String> = deps.iter().collect();
        let b: BTreeSet<&String> = kdeps.iter().collect();
        assert_eq!(a, b, "dependencies of {name}");
        // Loading our list from the end satisfies each module's own dependencies first.
        let mut loaded = BTreeSet::new();
        for d in deps.iter().rev() {
            for dd in &ours.deps[d].1 {
                assert!(loaded.contains(dd), "{name}: {d} loaded before its dependency {dd}");
            }
            loaded.insert(d);
        }
    }
    let set = |i: &ModIndex| i.aliases.iter().map(|a| (a.pattern.clone(), a.module.clone())).collect::<BTreeSet<_>>();
    assert_eq!(set(&ours), set(&kmod), "modules.alias differs from depmod's");
    assert_eq!(ours.softdeps, kmod.softdeps, "modules.softdep differs from depmod's");
    // A virtio NIC's modalias resolves to virtio_net.
    assert_eq!(ours.lookup("virtio:d00000001v00001AF4"), ["virtio_net"]);
}

#[test]
fn compressed_modules_keep_the_index_consistent() {
    let Some(root) = kernel_root("compressed_modules_keep_the_index_consistent") else { return };
    let mut o = options(root, Compression::None);
    o.modules = vec!["virtio_net".into()];
    o.module_compression = ModuleCompression::Xz;
    let built = build(&o).unwrap();
    let entries = cpio::read(&built.image).unwrap();
    let dep = entries.iter().find(|e| e.name.ends_with("/modules.dep")).unwrap();
    let dep = String::from_utf8(dep.data.clone()).unwrap();
    let (idx, bad) = ModIndex::parse(&dep, "", "", "");
    assert!(bad.is_empty());
    let (file, deps) = &idx.deps["virtio_net"];
    assert!(file.ends_with("virtio_net.ko.xz"), "{file}");
    assert!(!deps.is_empty() && deps.iter().all(|d| idx.deps[d].0.ends_with(".ko.xz")));
    for (_, (f, _)) in idx.deps.iter() {
        let e =
            entries.iter().find(|e| e.name.ends_with(f.as_str())).unwrap_or_else(|| panic!("{f} not in the archive"));
        assert_eq!(&e.data[..6], b"\xfd7zXZ\0", "{f} is xz");
    }
}
