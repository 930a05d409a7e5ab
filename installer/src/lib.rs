//! osie installer: runs as `/init` inside the initramfs (see [`init`]) or as an ordinary
//! command ([`cli`]: `installer install …`, `write-image`, `disks`) that tests and operators
//! drive against any block device.
//!
//! One module per concern. The boot side: [`init`] (orchestration of one boot), [`pid1`]
//! (mounts, console, reaping, failure), [`modules`] (kernel modules and coldplug), [`net`]
//! (netlink, DHCP, static addressing), [`hardware`] (inventory), [`finish`] (reboot,
//! poweroff, kexec). The install side: [`install`] (the whole flow from metadata to a
//! finished disk), [`metadata`], [`disk`] (enumerate, select, wipe), [`image`] (streaming,
//! the heart, built from the [`io`] adapters), [`gpt`], [`cloudinit`], [`steps`] (the record's own steps), [`bootentry`] (the
//! UEFI boot entry and `BootOrder`), [`report`] (events), and [`servers`] (several bootsvc
//! instances: the one in use, failover). Deprovisioning: [`erase`] (every disk erased
//! instead of an install, when the metadata says so).

pub mod backoff;
pub mod bootentry;
pub mod cli;
pub mod cloudinit;
pub mod disk;
pub mod erase;
pub mod finish;
pub mod gpt;
pub mod hardware;
pub mod http;
pub mod image;
pub mod init;
pub mod install;
pub mod io;
pub mod logging;
pub mod logship;
pub mod metadata;
pub mod modules;
pub mod net;
pub mod pid1;
pub mod random;
pub mod report;
pub mod servers;
pub mod steps;
pub mod target;
