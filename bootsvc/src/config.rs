//! `bootsvc.toml`: the service's configuration. The reference for every field is
//! `bootsvc/docs/config.md`; keep the two in step.
//!
//! Relative paths are relative to the directory of the config file. Loading (with field
//! paths in every error) is in [`load`], the checks in [`validate`], the `[security]` account's
//! lookup in `security`.

pub mod database;
mod http;
mod load;
mod security;
mod validate;

pub use http::{fits_fd_limit, AdminListen};

#[cfg(test)]
pub(crate) use load::sample;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Listen,
    #[serde(default)]
    pub dhcp: Dhcp,
    #[serde(default)]
    pub dhcp6: Dhcp6,
    #[serde(default)]
    pub router_advertisements: RouterAdvertisements,
    pub tftp: Tftp,
    pub http: Http,
    /// Which boot chain UEFI machines get (`docs/secure-boot.md`).
    #[serde(default)]
    pub boot: Boot,
    pub artifacts: Artifacts,
    /// What bootsvc trusts for images given by a vendor's checksums file.
    #[serde(default)]
    pub images: ImagesCfg,
    pub state: State,
    /// The machines in a directory of files; absent when they live in `[database]`.
    #[serde(default)]
    pub inventory: Option<Inventory>,
    /// PostgreSQL holds the machines, their state, events and leases (several instances may
    /// share it); absent: the embedded store under `state.dir` and `[inventory]`.
    #[serde(default)]
    pub database: Option<Database>,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub security: Security,
    /// The boot trace, the installer's log and the diagnosis thresholds
    /// (`bootsvc/docs/trace.md`).
    #[serde(default)]
    pub trace: Trace,
    /// The file this was loaded from (not part of the file itself).
    #[serde(skip)]
    pub source: PathBuf,
}

/// Where the service meets the machines' network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Interface DHCP and TFTP bind to (`SO_BINDTODEVICE`), e.g. `br0`.
    pub interface: String,
    /// This server's IPv4 address on that interface: DHCP server identifier, `siaddr`,
    /// TFTP server for the boot file.
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Full DHCP server for the machines in the inventory.
    #[default]
    Reservation,
    /// Beside a site DHCP server: answer PXE clients with boot information only.
    Proxy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dhcp {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub mode: DhcpMode,
    /// Lease time handed out, seconds.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u32,
    /// Addresses for inventory machines that have no fixed address.
    #[serde(default)]
    pub pool: Option<Pool>,
    /// Also answer port 4011 (PXE boot server discovery; UEFI asks there in proxy mode).
    #[serde(default = "yes")]
    pub port_4011: bool,
}

impl Default for Dhcp {
    fn default() -> Self {
        Dhcp {
            enabled: true,
            mode: DhcpMode::Reservation,
            lease_secs: default_lease_secs(),
            pool: None,
            port_4011: true,
        }
    }
}

/// `[dhcp6]`: a DHCPv6 server on `listen.interface` (`crate::dhcp6`, `bootsvc/docs/dhcp.md`,
/// "IPv6"): inventory machines get their record's `ip6` address and their boot file URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dhcp6 {
    #[serde(default)]
    pub enabled: bool,
    /// bootsvc's own IPv6 address on `listen.interface` (global or unique local): the host of
    /// the boot file URLs DHCPv6 hands out. Required when `enabled`.
    #[serde(default)]
    pub address: Option<Ipv6Addr>,
    /// Lease time handed out (valid lifetime), seconds; preferred lifetime is the same, T1
    /// half, T2 four fifths.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u32,
}

impl Default for Dhcp6 {
    fn default() -> Self {
        Dhcp6 { enabled: false, address: None, lease_secs: default_lease_secs() }
    }
}

impl Config {
    /// The base URL given to machines that reach bootsvc over IPv6 (DHCPv6 boot files, iPXE
    /// scripts, `osie.url`, metadata): `http.public_url6`, else `http://[dhcp6.address]:port`
    /// with the port of the listener that accepts IPv6. `None`: IPv6 is not served.
    pub fn public_url6(&self) -> Option<String> {
        if let Some(u) = &self.http.public_url6 {
            return Some(u.trim_end_matches('/').to_string());
        }
        self.dhcp6
            .address
            .map(|a| format!("http://[{a}]:{}", self.http.ipv6_listener().unwrap_or(self.http.listen).port()))
    }
}

/// Answers to IPv6 Router Solicitations on `listen.interface` (`crate::ra`). By default an
/// advertisement that configures nothing, so a host that waits for routers (iPXE: 13 s)
/// stops waiting; with `managed` or `prefix` it tells hosts where their address comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterAdvertisements {
    #[serde(default)]
    pub mode: RaMode,
    /// The M flag: addresses come from DHCPv6 (`[dhcp6]`). Sets the O flag too (the boot
    /// file URL and other configuration also come from DHCPv6).
    #[serde(default)]
    pub managed: bool,
    /// An on-link prefix for SLAAC, `2001:db8:1::/64` (the length must be 64 for SLAAC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl RouterAdvertisements {
    /// `prefix` parsed: address and length. Checked by `validate`.
    pub fn prefix(&self) -> Option<Result<(Ipv6Addr, u8), String>> {
        self.prefix.as_deref().map(parse_prefix6)
    }
}

/// `2001:db8:1::/64` → its network and length; host bits must be zero.
pub fn parse_prefix6(s: &str) -> Result<(Ipv6Addr, u8), String> {
    let (a, l) = s.split_once('/').ok_or_else(|| format!("{s:?} is not address/length"))?;
    let a: Ipv6Addr = a.parse().map_err(|e| format!("{a:?}: {e}"))?;
    let l: u8 = l.parse().map_err(|_| format!("{l:?} is not a prefix length"))?;
    if l > 128 {
        return Err(format!("/{l} is longer than 128"));
    }
    let mask = if l == 0 { 0 } else { u128::MAX << (128 - u32::from(l)) };
    if u128::from(a) & !mask != 0 {
        return Err(format!("{a}/{l} has host bits set"));
    }
    Ok((a, l))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RaMode {
    /// Answer, unless another router's advertisement (one that configures something) was
    /// heard on the interface within the hour.
    #[default]
    Auto,
    /// Always answer (a segment known to have no IPv6 router).
    On,
    /// Never: no socket at all (a router serves the segment, or IPv6 is not wanted).
    Off,
}

/// `[boot]`: the site's default boot chain for UEFI machines; a record's
/// `netboot.uefi_chain` overrides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    #[serde(default)]
    pub uefi_chain: UefiChain,
}

/// What UEFI PXE (arch 7, 9) and UEFI HTTP boot (arch 16) firmware is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UefiChain {
    /// `ipxe.efi` (Debian's, unsigned: refused by firmware enforcing Secure Boot), then the
    /// machine's iPXE script.
    #[default]
    Ipxe,
    /// Debian's signed `shimx64.efi`, which loads the signed network GRUB (`grubx64.efi`
    /// beside it), which reads the machine's GRUB configuration and boots Debian's signed
    /// kernel: works with Secure Boot enforcing.
    ShimGrub,
}

impl UefiChain {
    pub fn as_str(self) -> &'static str {
        match self {
            UefiChain::Ipxe => "ipxe",
            UefiChain::ShimGrub => "shim-grub",
        }
    }
}

/// A dynamic range; leases are persisted under `state.dir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub prefix: u8,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tftp {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Directory served read-only; holds `undionly.kpxe`, `ipxe.efi`, `snponly.efi`.
    pub root: PathBuf,
    /// Seconds without an ACK before a block is sent again.
    #[serde(default = "default_tftp_timeout")]
    pub timeout_secs: u64,
    /// Retransmissions of one block before the transfer is dropped. Low, so abandoned
    /// transfers (UEFI's tsize probe) end within seconds.
    #[serde(default = "default_tftp_retries")]
    pub max_send_retries: u32,
    /// Transfers at once from one source address (at most [`Tftp::MAX_TRANSFERS`]).
    #[serde(default = "default_tftp_per_client")]
    pub max_transfers_per_client: usize,
}

impl Tftp {
    /// Transfers at once in all (not a setting: the bound of `max_transfers_per_client`);
    /// more are refused ("server busy") so memory stays bounded (each holds a socket and at
    /// most ~4 MiB of read-ahead, usually 64 KiB).
    pub const MAX_TRANSFERS: usize = 2048;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Socket address to bind, e.g. `0.0.0.0:8080`, `[::]:8080` (IPv6 and IPv4) or
    /// `[2001:db8::1]:8080`.
    pub listen: SocketAddr,
    /// A second listener for IPv6 callers when `listen` is an IPv4 address, e.g.
    /// `[2001:db8::1]:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen6: Option<SocketAddr>,
    /// Base URL machines use to reach this service, e.g. `http://192.0.2.1:8080`. Goes into
    /// DHCP replies, iPXE scripts and `osie.url=`.
    pub public_url: String,
    /// Base URL for machines that reach this service over IPv6, e.g. `http://[2001:db8::1]:8080`;
    /// unset: derived from `dhcp6.address` ([`Config::public_url6`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url6: Option<String>,
    /// The `public_url` of the site's other instances: the installer's `osie.url` lists them
    /// after this one's, and falls over to them in order (`docs/config.md`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Largest request body accepted (events, admin), bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers) accepted, bytes; larger gets 431.
    #[serde(default = "default_max_header")]
    pub max_header_bytes: usize,
    /// Seconds a client has to send its request head (and its body), and a handler to
    /// produce a response head.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Connections open at once, from every client together; more are refused (503).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one source address; more are refused (503).
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// Seconds a response may make no progress writing (the client not reading) before the
    /// connection is closed.
    #[serde(default = "default_write_timeout")]
    pub write_timeout_secs: u64,
    /// Seconds a keep-alive connection may wait for its next request.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifacts {
    /// Directory with the installer's kernel and initramfs, served under `/artifacts/`;
    /// arm64 machines' under `arm64/` in it, by the same names.
    pub dir: PathBuf,
    #[serde(default = "default_kernel")]
    pub kernel: String,
    #[serde(default = "default_initrd")]
    pub initrd: String,
    /// Directory with OS images and their manifests, served under `/images/`.
    pub images_dir: PathBuf,
    /// Kernel arguments added for every machine (before the machine's own).
    #[serde(default = "default_kernel_args")]
    pub kernel_args: String,
}

/// `[images]`: the trust for images whose digest comes from a vendor's checksums file
/// (`bootsvc/docs/inventory.md`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesCfg {
    /// OpenPGP public keys (armored or binary, several in one file) that a record's
    /// `signature_url` must be signed by. Unset: a record with `signature_url` is refused.
    #[serde(default)]
    pub keyring: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Directory for the state store (events, machine state, leases).
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Directory of machine records: `*.json`, one machine each, or Tinkerbell `Hardware`
    /// objects / lists.
    pub dir: PathBuf,
}

/// `[database]`: where PostgreSQL is (checked in `database`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// `postgresql://user@host[:port]/dbname` (a Unix socket: `host=/run/postgresql` in the
    /// query, or the directory percent-encoded as the host). No password: use `url_file`.
    #[serde(default)]
    pub url: Option<String>,
    /// Or: a file (owner-only) holding the URL, password included.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Connections this instance keeps open at most (besides the one that listens for
    /// changes).
    #[serde(default = "default_db_connections")]
    pub max_connections: usize,
    /// Seconds to connect, and at most for one operation, before it fails.
    #[serde(default = "default_db_timeout")]
    pub timeout_secs: u64,
    /// The site this instance serves: the machines whose record names it or no site, and
    /// this site's DHCP pool. Default `default`.
    #[serde(default)]
    pub site: Option<String>,
}

impl Database {
    /// The site's name, `default` when none is given.
    pub fn site(&self) -> &str {
        self.site.as_deref().unwrap_or("default")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// File holding the bearer token for the admin API. Without it the admin API is off.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Where the admin API listens: `ip:port` (default `127.0.0.1:8081`) or the absolute
    /// path of a Unix socket. Never the machines' listener.
    #[serde(default)]
    pub listen: AdminListen,
    /// File holding a second token that logs in to the status page (`/ui/`) read-only: it
    /// sees everything and can do nothing. Not accepted by the admin API.
    #[serde(default)]
    pub read_only_token_file: Option<PathBuf>,
    /// Seconds a status page session lasts after its login.
    #[serde(default = "default_session_secs")]
    pub session_secs: u64,
}

fn default_session_secs() -> u64 {
    8 * 3600
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            token_file: None,
            listen: AdminListen::default(),
            read_only_token_file: None,
            session_secs: default_session_secs(),
        }
    }
}

impl Admin {
    /// Bounds of `session_secs`: a minute to a week.
    pub const SESSION_SECS: std::ops::RangeInclusive<u64> = 60..=7 * 86_400;

    /// The admin listener's caps: a few operators and scripts, never the machines (fixed;
    /// `http.max_connections` is checked against the open-files limit with these added).
    pub const MAX_CONNECTIONS: usize = 64;
    pub const MAX_PER_SOURCE: usize = 16;
}

/// `[trace]`: bounds of the boot trace and the installer's log, and the thresholds of the
/// diagnosis (`bootsvc/docs/trace.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trace {
    /// Steps kept per machine (a ring: the oldest go first).
    pub steps_per_machine: usize,
    /// Steps waiting to be stored at most; past that they are dropped (and counted), never
    /// waited for.
    pub queue: usize,
    /// Installer log: bytes kept per run.
    pub log_run_bytes: u64,
    /// Installer log: runs kept per machine.
    pub log_runs: usize,
    /// Diagnosis: offers in a row never followed by a request before "another DHCP server?".
    pub offers_without_request: u32,
    /// Diagnosis: seconds after a boot file, a script or the kernel before the next step is
    /// overdue.
    pub next_step_secs: u64,
    /// Diagnosis: seconds after the initramfs before the installer's first event is overdue.
    pub installer_secs: u64,
    /// Diagnosis: seconds without an installer event before the install is called stuck.
    pub event_silence_secs: u64,
    /// Diagnosis: seconds after `installed` before a missing phone-home is called out.
    pub first_boot_secs: u64,
}

impl Default for Trace {
    fn default() -> Self {
        let t = crate::trace::Thresholds::default();
        Trace {
            steps_per_machine: 500,
            queue: 8192,
            log_run_bytes: 1 << 20,
            log_runs: 3,
            offers_without_request: t.offers_without_request,
            next_step_secs: t.next_step_secs,
            installer_secs: t.installer_secs,
            event_silence_secs: t.event_silence_secs,
            first_boot_secs: t.first_boot_secs,
        }
    }
}

impl Trace {
    pub fn thresholds(&self) -> crate::trace::Thresholds {
        crate::trace::Thresholds {
            offers_without_request: self.offers_without_request,
            next_step_secs: self.next_step_secs,
            installer_secs: self.installer_secs,
            event_silence_secs: self.event_silence_secs,
            first_boot_secs: self.first_boot_secs,
        }
    }

    pub fn log_bounds(&self) -> crate::trace::log::LogBounds {
        crate::trace::log::LogBounds { run_bytes: self.log_run_bytes, runs: self.log_runs }
    }
}

/// Who bootsvc runs as once its ports are bound (`crate::privileges`); looked up by
/// [`Security::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// User to switch to after binding. Absent: bootsvc stays uid 0 with no capabilities.
    #[serde(default)]
    pub user: Option<String>,
    /// Group to switch to (the only supplementary group too); default the user's primary group.
    #[serde(default)]
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    #[serde(default)]
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `bootsvc::dhcp=debug,info`. `RUST_LOG` overrides.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log { format: LogFormat::Text, level: default_log_level() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn yes() -> bool {
    true
}
fn default_lease_secs() -> u32 {
    3600
}
fn default_tftp_timeout() -> u64 {
    1
}
fn default_tftp_retries() -> u32 {
    3
}
fn default_tftp_per_client() -> usize {
    8
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_max_header() -> usize {
    16 << 10
}
fn default_request_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_source() -> usize {
    64
}
fn default_write_timeout() -> u64 {
    60
}
fn default_idle_timeout() -> u64 {
    30
}
fn default_kernel() -> String {
    "vmlinuz".into()
}
fn default_initrd() -> String {
    "initramfs.img".into()
}
fn default_kernel_args() -> String {
    "console=tty0 console=ttyS0,115200n8".into()
}
fn default_db_connections() -> usize {
    8
}
fn default_db_timeout() -> u64 {
    5
}
fn default_log_level() -> String {
    "info".into()
}
