//! osie installer: runs as `/init` inside the initramfs (see [`init`]) or as an ordinary
//! command (`installer install …`) that tests and operators drive against any block device.
//!
//! One module per concern. The boot side: [`init`] (orchestration of one boot), [`pid1`]
//! (mounts, console, reaping, failure), [`modules`] (kernel modules and coldplug), [`net`]
//! (netlink, DHCP, static addressing), [`hardware`] (inventory), [`finish`] (reboot,
//! poweroff, kexec). The install side: [`install`] (the whole flow from metadata to a
//! finished disk) and [`report`] (events).

pub mod finish;
pub mod hardware;
pub mod init;
pub mod install;
pub mod modules;
pub mod net;
pub mod pid1;
pub mod report;
