//! Item 6, boot environment size: what a machine downloads before the installer runs
//! (kernel + initramfs from `scripts/build`, in `build/boot/`), beside the published sizes
//! of Tinkerbell's Hook and the ironic-python-agent ramdisk.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{Ctx, Record, SuiteResult};

/// Published figures of the peers: (what, bytes downloaded, bytes in memory if published,
/// where the figure comes from).
const PUBLISHED: [(&str, f64, Option<f64>, &str); 2] = [
    (
        "Tinkerbell Hook (x86_64 kernel + initramfs tarball, LinuxKit)",
        180e6,
        Some(900e6),
        "tinkerbell/hook pull request #225 (May 2024): \"the default x86 hook tarball is down from 223 to \
         180mb compressed\", the uncompressed initramfs \"back below 900mb\" — \
         https://github.com/tinkerbell/hook/pull/225",
    ),
    (
        "ironic-python-agent ramdisk (DIB, ipa-centos9-stable-2023.1 kernel + initramfs)",
        13_378_216.0 + 438_446_711.0,
        None,
        "the files as published on tarballs.opendev.org, listed with their byte sizes in osism/testbed \
         issue #1801 (Oct 2023): ipa-centos9-stable-2023.1.kernel 13,378,216 and .initramfs 438,446,711 — \
         https://github.com/osism/testbed/issues/1801",
    ),
];

pub fn run(ctx: &Ctx, out: &mut SuiteResult) -> Result<()> {
    let boot = ctx.root.join("build/boot");
    let (k, i) = (boot.join("vmlinuz"), boot.join("initramfs.img"));
    if !k.is_file() || !i.is_file() {
        bail!("{} or {} is missing: run scripts/build (scripts/bench does)", k.display(), i.display());
    }
    let len =
        |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len() as f64).with_context(|| p.display().to_string());
    let (kb, ib) = (len(&k)?, len(&i)?);
    // What the initramfs holds once unpacked (the kernel decompresses it into RAM).
    let unpacked = Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            &format!(
                "(zstd -dcq {0} 2>/dev/null || gzip -dc {0} 2>/dev/null || xz -dc {0} 2>/dev/null || cat {0}) | wc -c",
                i.display()
            ),
        ])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok());
    let kind = crate::machine::output("file", &["-b", &i.to_string_lossy()]);
    let installer = len(&ctx.installer).ok();
    let mut rec = Record::new("size", "boot environment", "osie (build/boot)", true);
    let mut fig =
        BTreeMap::from([("kernel_bytes".into(), kb), ("initramfs_bytes".into(), ib), ("total_bytes".into(), kb + ib)]);
    if let Some(u) = unpacked {
        fig.insert("initramfs_unpacked_bytes".into(), u);
    }
    if let Some(b) = installer {
        fig.insert("installer_bytes".into(), b);
    }
    rec.runs.push(fig);
    rec.commands.push("scripts/build (kernel from build/kernel, initramfs from initramfs/); stat -c %s build/boot/{vmlinuz,initramfs.img}".into());
    rec.evidence.push(format!("initramfs: {kind}"));
    out.records.push(rec);
    for (what, bytes, mem, source) in PUBLISHED {
        let mut r = Record::new("size", "boot environment", what, false);
        let mut fig = BTreeMap::from([("total_bytes".into(), bytes)]);
        if let Some(m) = mem {
            fig.insert("initramfs_unpacked_bytes".into(), m);
        }
        r.runs.push(fig);
        r.evidence.push(source.into());
        out.records.push(r);
    }
    Ok(())
}

pub fn render(s: &mut String, r: &SuiteResult) {
    let _ = writeln!(s, "## 6. Boot environment size\n");
    let _ = writeln!(s, "`scripts/bench size`: what a machine downloads before the installer runs.\n");
    let _ = writeln!(
        s,
        "| | downloaded (kernel + initramfs) | initramfs in memory | osie is smaller by |\n|---|---:|---:|---:|"
    );
    let osie = r.records.iter().find(|x| x.osie).and_then(|x| x.median("total_bytes"));
    let mb = |v: Option<f64>| v.map(|b| format!("{:.1} MB", b / 1e6)).unwrap_or_else(|| "—".into());
    for rec in &r.records {
        let total = rec.median("total_bytes");
        let ratio = match (osie, total) {
            (Some(o), Some(t)) if !rec.osie => format!("{:.0}×", t / o),
            _ => "—".into(),
        };
        let name = if rec.osie { format!("**{}**", rec.tool) } else { rec.tool.clone() };
        let _ = writeln!(s, "| {name} | {} | {} | {ratio} |", mb(total), mb(rec.median("initramfs_unpacked_bytes")));
    }
    let _ = writeln!(s);
    if let Some(o) = r.records.iter().find(|x| x.osie) {
        let b = |k: &str| o.median(k).map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into());
        let _ = writeln!(
            s,
            "osie: kernel {} bytes, initramfs {} bytes ({}), of which the installer binary is {} bytes.\n",
            b("kernel_bytes"),
            b("initramfs_bytes"),
            o.evidence.first().map(String::as_str).unwrap_or(""),
            b("installer_bytes")
        );
    }
    let _ = writeln!(s, "Sources of the published figures:\n");
    for rec in r.records.iter().filter(|x| !x.osie) {
        let _ = writeln!(s, "- {}: {}", rec.tool, rec.evidence.join("; "));
    }
    let _ = writeln!(s);
}
