//! Bringing up the boot NIC: find it by MAC (`osie.mac`), set it up over netlink, address
//! it from DHCP or from `osie.ip=`, add the default route and write `/etc/resolv.conf`; or,
//! when bootsvc is reached over IPv6 ([`bring_up6`]), let the kernel form an address from
//! the router advertisement (SLAAC, EUI-64: the address bootsvc identifies the machine by)
//! and wait until it is usable.
//!
//! Everything goes through netlink in the calling thread's network namespace (not
//! `/sys/class/net`, which shows the namespace sysfs was mounted in), so tests can run
//! [`bring_up`] inside a namespace of their own.

pub mod dhcp;
pub mod dhcp_client;
pub mod netlink;
pub mod resolv;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use osie_api::{MacAddr, StaticIp};

use netlink::{Link, Netlink};

#[derive(Debug, Clone)]
pub struct NetOptions {
    /// Where to write the resolver configuration (`/etc/resolv.conf` in the initramfs).
    pub resolv_conf: PathBuf,
    pub dhcp: dhcp_client::Options,
    /// How long to wait for the NIC to appear (its driver may still be probing).
    pub link_wait: Duration,
    /// How long to wait for carrier before trying DHCP anyway (autonegotiation takes seconds
    /// on real switches).
    pub carrier_wait: Duration,
    /// How long to wait for a global IPv6 address (router advertisement, then duplicate
    /// address detection) in [`bring_up6`].
    pub slaac_wait: Duration,
    /// Where the IPv6 settings of interfaces are (`/proc/sys/net/ipv6/conf`).
    pub ipv6_conf: PathBuf,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            dhcp: dhcp_client::Options::default(),
            link_wait: Duration::from_secs(60),
            carrier_wait: Duration::from_secs(15),
            slaac_wait: Duration::from_secs(30),
            ipv6_conf: PathBuf::from("/proc/sys/net/ipv6/conf"),
        }
    }
}

/// How the NIC ended up configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub ifname: String,
    pub mac: MacAddr,
    pub address: IpAddr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// `dhcp`, `static` or `slaac`.
    pub method: &'static str,
    /// The DHCP lease behind it (for renewal), `None` when static.
    pub lease: Option<dhcp::Lease>,
}

impl std::fmt::Display for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}) {}/{} via {} ({})",
            self.ifname,
            self.mac,
            self.address,
            self.prefix,
            self.gateway.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
            self.method
        )?;
        if !self.dns.is_empty() {
            let d: Vec<String> = self.dns.iter().map(|d| d.to_string()).collect();
            write!(f, " dns {}", d.join(","))?;
        }
        Ok(())
    }
}

/// Wait until a link with `mac` exists; errors list the links that do.
pub fn find_link(nl: &mut Netlink, mac: MacAddr, wait: Duration) -> Result<Link> {
    let start = Instant::now();
    loop {
        let links = nl.links()?;
        if let Some(l) = links.iter().find(|l| l.mac == Some(mac.octets())) {
            return Ok(l.clone());
        }
        if start.elapsed() >= wait {
            let present: Vec<String> = links
                .iter()
                .map(|l| format!("{} {}", l.name, l.mac.map(|m| MacAddr(m).to_string()).unwrap_or_else(|| "-".into())))
                .collect();
            bail!("no network interface with MAC {mac} after {} s (present: {})", wait.as_secs(), present.join(", "));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Bring up the NIC with `mac` and configure it (DHCP unless `static_ip`).
pub fn bring_up(mac: MacAddr, static_ip: Option<&StaticIp>, opts: &NetOptions) -> Result<NetConfig> {
    let mut nl = Netlink::open()?;
    let link = find_link(&mut nl, mac, opts.link_wait)?;
    nl.set_up(&link, None)?;
    wait_carrier(&mut nl, &link, opts.carrier_wait)?;
    let cfg = match static_ip {
        Some(s) => NetConfig {
            ifname: link.name.clone(),
            mac,
            address: s.address.into(),
            prefix: s.prefix,
            gateway: s.gateway,
            dns: s.dns.clone(),
            domain: None,
            method: "static",
            lease: None,
        },
        None => {
            let lease = dhcp_client::obtain(&link.name, mac, &opts.dhcp)?;
            if let Some(mtu) = lease.mtu.filter(|m| Some(*m as u32) != link.mtu) {
                nl.set_up(&link, Some(mtu as u32)).with_context(|| format!("setting MTU {mtu} from the lease"))?;
            }
            NetConfig {
                ifname: link.name.clone(),
                mac,
                address: lease.address.into(),
                prefix: lease.prefix,
                gateway: lease.routers.first().copied(),
                dns: lease.dns.clone(),
                domain: lease.domain.clone(),
                method: "dhcp",
                lease: Some(lease),
            }
        }
    };
    if let IpAddr::V4(a) = cfg.address {
        nl.add_address(&link, a, cfg.prefix)?;
    }
    if let Some(gw) = cfg.gateway {
        nl.set_default_route(&link, gw)?;
    }
    resolv::write(&opts.resolv_conf, &cfg.dns, cfg.domain.as_deref())?;
    tracing::info!("network: {cfg}");
    Ok(cfg)
}

/// Bring up the NIC with `mac` for IPv6: accept router advertisements and form addresses
/// from them (SLAAC, with EUI-64 interface identifiers), set it up, and wait for a global
/// address that is done with duplicate address detection. The default route comes from the
/// advertisement too (the kernel's). No DHCPv6 client: a machine needs a prefix in the
/// advertisement (`router_advertisements.prefix`).
pub fn bring_up6(mac: MacAddr, opts: &NetOptions) -> Result<NetConfig> {
    let mut nl = Netlink::open()?;
    let link = find_link(&mut nl, mac, opts.link_wait)?;
    let conf = opts.ipv6_conf.join(&link.name);
    // Before the link comes up: its link-local address is formed then, by these rules.
    for (key, value) in [("disable_ipv6", "0"), ("accept_ra", "1"), ("autoconf", "1"), ("addr_gen_mode", "0")] {
        let path = conf.join(key);
        std::fs::write(&path, value).with_context(|| format!("setting {} to {value}", path.display()))?;
    }
    nl.set_up(&link, None)?;
    wait_carrier(&mut nl, &link, opts.carrier_wait)?;
    let start = Instant::now();
    let a = loop {
        let all = nl.addresses6()?;
        if let Some(a) = all.iter().find(|a| a.index == link.index && a.usable_global()) {
            break a.clone();
        }
        if start.elapsed() >= opts.slaac_wait {
            let seen: Vec<String> =
                all.iter().filter(|a| a.index == link.index).map(|a| format!("{}/{}", a.address, a.prefix)).collect();
            bail!(
                "no global IPv6 address on {} after {} s (a router advertisement with a prefix forms one;                  addresses now: {})",
                link.name,
                opts.slaac_wait.as_secs(),
                if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let cfg = NetConfig {
        ifname: link.name.clone(),
        mac,
        address: a.address.into(),
        prefix: a.prefix,
        gateway: None,
        dns: Vec::new(),
        domain: None,
        method: "slaac",
        lease: None,
    };
    tracing::info!("network: {cfg}");
    Ok(cfg)
}

fn wait_carrier(nl: &mut Netlink, link: &Link, wait: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let now = nl.links()?.into_iter().find(|l| l.index == link.index);
        match now {
            None => bail!("{} disappeared while coming up", link.name),
            Some(l) if l.carrier != Some(false) => return Ok(()),
            Some(_) if start.elapsed() >= wait => {
                tracing::warn!(ifname = %link.name, "no carrier after {} s; trying anyway", wait.as_secs());
                return Ok(());
            }
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
