//! Soak with faults: hundreds of real installs (the installer in command mode, loop devices
//! as disks) against the real bootsvc, each machine in its own network namespace behind a
//! fault-injecting proxy, while bootsvc is killed and restarted. Every disk is checked
//! against the image and every machine's record in bootsvc against what happened.
//!
//! - [`image`]: the soak image (GPT, a random payload partition, an ext4 root) and what an
//!   install may and may not change in it;
//! - [`site`]: bootsvc's namespace, bridge, tree and supervisor (kill -9, restart);
//! - [`proxy`]: resets, stalls, latency, lost acknowledgements, duplicated and replayed
//!   events, between one installer and bootsvc;
//! - [`machine`]: one install and its checks; [`verify`]: the disk checks;
//! - [`run`]: the installs, the killer, the figures; [`rng`]: seeded, so a run repeats.
//!
//! `scripts/soak` runs it; `tests/short.rs` is the CI version. Figures: RELIABILITY.md.

pub mod image;
pub mod machine;
pub mod proxy;
pub mod rng;
pub mod run;
pub mod site;
pub mod verify;
