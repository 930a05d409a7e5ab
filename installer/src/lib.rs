//! osie installer: runs as `/init` inside the initramfs (see [`init`]) or as an ordinary
//! command (`installer install …`) that tests and operators drive against any block device.
//!
//! One module per concern. The boot side: [`init`] (PID-1 duties). The install side:
//! [`install`] (the whole flow from metadata to a finished disk) and [`report`] (events).

pub mod init;
pub mod install;
pub mod report;
