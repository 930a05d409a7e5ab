//! osie's end-to-end harness: real QEMU machines network-booted and provisioned by the real
//! `bootsvc` and installer, watched through bootsvc's logs, its events and the machines'
//! serial consoles. The scenarios in `tests/` and `scripts/demo` (the `demo` binary) are
//! built on it.
//!
//! - [`inputs`]: the build outputs a run needs (kernel + initramfs, image, iPXE binaries,
//!   the bootsvc binary), with errors that name the command that makes them.
//! - [`lab`]: a network namespace with a bridge and `bootsvc serve` on it; machine records;
//!   logs kept under `qemu-tests/artifacts/<scenario>/` when a scenario fails.
//! - [`fleet`]: a lab with two bootsvc instances on one PostgreSQL.
//! - [`record`]: the machine records the scenarios use.
//! - [`machine`]: QEMU machines (SeaBIOS + iPXE ROM, OVMF PXE, OVMF HTTP boot) and disks.
//! - [`bootlog`], [`timeline`], [`clock`], [`console`]: what happened to a machine, in order,
//!   relative to power-on.
//! - [`watch`]: waiting for phases; failures say which phase never came and what was seen.
//! - [`flow`]: the phases of one provisioning run, shared by the scenarios and the demo.
//! - [`page`]: the status page watched in headless Chromium while a machine installs.
//! - [`signals`]: Ctrl-C and timeouts unwind through the guards; children die with us.

pub mod bootlog;
pub mod clock;
pub mod console;
pub mod fleet;
pub mod flow;
pub mod inputs;
pub mod lab;
pub mod machine;
pub mod page;
pub mod record;
pub mod signals;
pub mod timeline;
pub mod watch;

pub use inputs::Inputs;
pub use lab::Lab;
pub use machine::{Disk, Firmware, Machine, Spec};
pub use record::Record;
pub use timeline::Timeline;
pub use watch::Watch;
