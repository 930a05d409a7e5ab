//! osie's benchmarks: load generators for the three netboot protocols and the harness that
//! sets osie beside the tools operators would otherwise run (dnsmasq, kea-dhcp4, tftpd-hpa,
//! nginx, coreos-installer, `curl | zstd | dd`) and writes `BENCHMARKS.md`.
//!
//! Load generators, on the test kit's clients (`osie_testkit::{dhcp, tftp, http}`, which
//! bootsvc's own load test uses too):
//! - [`dhcp`]: a window of machines' DISCOVER → OFFER → REQUEST → ACK in flight for a time.
//! - [`fanout`]: many TFTP or HTTP clients at once.
//! - [`storm`]: machines booting at once: DHCP, then TFTP, then HTTP, each machine on its
//!   own timeline.
//!
//! Harness: [`servers`] (each server under test in a network namespace), [`measure`]
//! (CPU time of processes and threads, rusage of commands), [`suites`] (one per item of
//! the report), [`report`] (the JSON results → `BENCHMARKS.md`), [`machine`] (what the
//! figures were measured on).

pub mod cgroup;
pub mod cli;
pub mod dhcp;
pub mod fanout;
pub mod fleet;
pub mod fleet_storm;
pub mod machine;
pub mod measure;
pub mod report;
pub mod servers;
pub mod stats;
pub mod storm;
pub mod suites;
