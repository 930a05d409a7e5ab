//! Kernel command-line keys: bootsvc writes them into the iPXE script, the installer reads
//! them from `/proc/cmdline`.
//!
//! `/proc/cmdline` is world-readable, so nothing secret is ever passed here: the installer
//! fetches everything else from the metadata service.

use std::net::Ipv4Addr;

use crate::mac::MacAddr;

/// Base URL of bootsvc's HTTP service, e.g. `http://192.0.2.1:8080`; or several, separated
/// by commas (`http://192.0.2.1:8080,http://192.0.2.2:8080`): instances of one site, tried
/// in this order ([`parse_urls`]).
pub const KEY_URL: &str = "osie.url";
/// MAC of the NIC the machine booted from; the installer brings this NIC up.
pub const KEY_MAC: &str = "osie.mac";
/// Static addressing instead of DHCP: `addr/prefix[,gateway[,dns[,dns…]]]`.
pub const KEY_IP: &str = "osie.ip";
/// More verbose installer logs.
pub const KEY_DEBUG: &str = "osie.debug";
/// Stay up after a failure for inspection instead of rebooting.
pub const KEY_RESCUE: &str = "osie.rescue";

/// What the installer learns from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// The first `osie.url` (the instance that rendered the script).
    pub url: String,
    /// The other instances of `osie.url`, in order, without duplicates; empty for one URL.
    pub fallback_urls: Vec<String>,
    pub mac: MacAddr,
    pub ip: Option<StaticIp>,
    pub debug: bool,
    pub rescue: bool,
}

/// `osie.ip=192.0.2.10/24,192.0.2.1,192.0.2.1`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIp {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("kernel command line has no {0}= (bootsvc's iPXE script sets it)")]
    Missing(&'static str),
    #[error("kernel command line key {key}={value:?} is invalid: {why}")]
    Invalid { key: &'static str, value: String, why: String },
}

impl BootParams {
    /// Parse a whole kernel command line. Unknown words are ignored; the last occurrence of a
    /// key wins, as with the kernel's own parameters.
    pub fn parse(cmdline: &str) -> Result<Self, CmdlineError> {
        let mut urls: Option<Vec<String>> = None;
        let mut mac = None;
        let mut ip = None;
        let mut debug = false;
        let mut rescue = false;
        for word in split_words(cmdline) {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word.as_str(), None),
            };
            match (key, value) {
                (KEY_URL, Some(v)) => urls = Some(parse_urls(v)?),
                (KEY_MAC, Some(v)) => {
                    mac = Some(v.parse().map_err(|e: crate::mac::MacParseError| invalid(KEY_MAC, v, &e.to_string()))?);
                }
                (KEY_IP, Some(v)) => ip = Some(StaticIp::parse(v)?),
                (KEY_DEBUG, _) => debug = value.is_none_or(is_true),
                (KEY_RESCUE, _) => rescue = value.is_none_or(is_true),
                _ => {}
            }
        }
        let mut urls = urls.ok_or(CmdlineError::Missing(KEY_URL))?.into_iter();
        Ok(BootParams {
            url: urls.next().ok_or(CmdlineError::Missing(KEY_URL))?,
            fallback_urls: urls.collect(),
            mac: mac.ok_or(CmdlineError::Missing(KEY_MAC))?,
            ip,
            debug,
            rescue,
        })
    }

    /// The `osie.*` words for a kernel command line (no `console=`; the caller adds those).
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![format!("{KEY_URL}={}", self.urls().join(",")), format!("{KEY_MAC}={}", self.mac)];
        if let Some(ip) = &self.ip {
            v.push(format!("{KEY_IP}={}", ip.to_value()));
        }
        if self.debug {
            v.push(KEY_DEBUG.to_string());
        }
        if self.rescue {
            v.push(KEY_RESCUE.to_string());
        }
        v
    }
}

impl BootParams {
    /// Every `osie.url`, the first one first.
    /// Is bootsvc reached over IPv6: the first `osie.url`'s host a bracketed IPv6 literal
    /// (`http://[2001:db8::1]:8080`)? Then the installer's network is IPv6 (SLAAC).
    pub fn wants_ipv6(&self) -> bool {
        self.url.split_once("://").is_some_and(|(_, rest)| rest.starts_with('['))
    }

    pub fn urls(&self) -> Vec<&str> {
        std::iter::once(&self.url).chain(&self.fallback_urls).map(String::as_str).collect()
    }
}

/// An `osie.url` value: one base URL or several separated by commas, each `http://` or
/// `https://` with a host; trailing slashes are dropped, and so is a URL given twice (the
/// first place counts). The error names the bad entry and its place in the list.
pub fn parse_urls(v: &str) -> Result<Vec<String>, CmdlineError> {
    let mut out: Vec<String> = Vec::new();
    let many = v.contains(',');
    for (i, entry) in v.split(',').enumerate() {
        let bad = |why: &str| {
            let why = if many { format!("entry {} {entry:?} {why}", i + 1) } else { why.to_string() };
            invalid(KEY_URL, v, &why)
        };
        if entry.is_empty() {
            return Err(bad("is empty (two commas, or one at an end)"));
        }
        let Some((scheme, rest)) = entry.split_once("://").filter(|(s, _)| matches!(*s, "http" | "https")) else {
            return Err(bad("must start with http:// or https://"));
        };
        // Trailing slashes go, but never into the `//` of the scheme.
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("has no host"));
        }
        let url = format!("{scheme}://{rest}");
        if !out.contains(&url) {
            out.push(url);
        }
    }
    Ok(out)
}

impl StaticIp {
    pub fn parse(v: &str) -> Result<Self, CmdlineError> {
        let mut parts = v.split(',');
        let cidr = parts.next().unwrap_or_default();
        let (addr, prefix) =
            cidr.split_once('/').ok_or_else(|| invalid(KEY_IP, v, "expected addr/prefix[,gateway[,dns…]]"))?;
        let address: Ipv4Addr = addr.parse().map_err(|_| invalid(KEY_IP, v, "address is not IPv4"))?;
        let prefix: u8 =
            prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| invalid(KEY_IP, v, "prefix must be 0..=32"))?;
        let gateway = match parts.next() {
            None | Some("") => None,
            Some(g) => Some(g.parse().map_err(|_| invalid(KEY_IP, v, "gateway is not IPv4"))?),
        };
        let dns = parts
            .filter(|d| !d.is_empty())
            .map(|d| d.parse().map_err(|_| invalid(KEY_IP, v, "dns server is not IPv4")))
            .collect::<Result<_, _>>()?;
        Ok(StaticIp { address, prefix, gateway, dns })
    }

    pub fn to_value(&self) -> String {
        let mut s = format!("{}/{}", self.address, self.prefix);
        if self.gateway.is_some() || !self.dns.is_empty() {
            s.push(',');
            if let Some(g) = self.gateway {
                s.push_str(&g.to_string());
            }
        }
        for d in &self.dns {
            s.push(',');
            s.push_str(&d.to_string());
        }
        s
    }
}

fn is_true(v: &str) -> bool {
    !matches!(v, "0" | "no" | "false" | "off")
}

fn invalid(key: &'static str, value: &str, why: &str) -> CmdlineError {
    CmdlineError::Invalid { key, value: value.to_string(), why: why.to_string() }
}

/// Split like the kernel does: on whitespace, with double quotes grouping.
fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (bootsvc/fuzz, target api_json): `osie.url=http://` lost the `//` of
    /// its scheme to the trailing-slash trim and came back as `http:`.
    #[test]
    fn a_url_without_a_host_is_refused() {
        for bad in ["http://", "https:///", "http:///x", "http:", "ftp://x"] {
            let e = BootParams::parse(&format!("osie.url={bad} osie.mac=52:54:00:00:00:01")).unwrap_err();
            assert!(matches!(e, CmdlineError::Invalid { key: KEY_URL, .. }), "{bad}: {e}");
        }
        let p = BootParams::parse("osie.url=http://x// osie.mac=52:54:00:00:00:01").unwrap();
        assert_eq!(p.url, "http://x");
        assert_eq!(BootParams::parse(&p.to_args().join(" ")).unwrap(), p);
    }

    #[test]
    fn ipv6_urls() {
        let p =
            BootParams::parse("osie.url=http://[2001:db8::1]:8080/,http://192.0.2.1:8080 osie.mac=52:54:00:00:00:01")
                .unwrap();
        assert_eq!(p.urls(), ["http://[2001:db8::1]:8080", "http://192.0.2.1:8080"]);
        assert!(p.wants_ipv6());
        let p =
            BootParams::parse("osie.url=http://192.0.2.1:8080,http://[2001:db8::1]:8080 osie.mac=52:54:00:00:00:01")
                .unwrap();
        assert!(!p.wants_ipv6(), "the first URL decides");
    }

    #[test]
    fn several_urls_keep_their_order() {
        let p = BootParams::parse(
            "osie.url=http://192.0.2.1:8080/,https://192.0.2.2:8443,http://192.0.2.1:8080 osie.mac=52:54:00:00:00:01",
        )
        .unwrap();
        assert_eq!(p.url, "http://192.0.2.1:8080");
        assert_eq!(p.fallback_urls, ["https://192.0.2.2:8443"], "the duplicate is dropped");
        assert_eq!(p.urls(), ["http://192.0.2.1:8080", "https://192.0.2.2:8443"]);
        assert_eq!(p.to_args()[0], "osie.url=http://192.0.2.1:8080,https://192.0.2.2:8443");
        assert_eq!(BootParams::parse(&p.to_args().join(" ")).unwrap(), p);
        // The last osie.url wins as a whole: lists are not merged.
        let p = BootParams::parse("osie.url=http://a,http://b osie.url=http://c osie.mac=52:54:00:00:00:01").unwrap();
        assert_eq!(p.urls(), ["http://c"]);
    }

    #[test]
    fn a_bad_entry_is_named() {
        for (v, want) in [
            ("http://a,ftp://b", "entry 2 \"ftp://b\" must start with http:// or https://"),
            ("http://a,,http://b", "entry 2 \"\" is empty"),
            ("http://a,", "entry 2 \"\" is empty"),
            (",http://a", "entry 1 \"\" is empty"),
            ("http://a,http://", "entry 2 \"http://\" has no host"),
            ("b:8080,http://a", "entry 1 \"b:8080\" must start"),
        ] {
            let e = parse_urls(v).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(KEY_URL), "{v}: {e}");
        }
        let e = parse_urls("ftp://x").unwrap_err().to_string();
        assert!(!e.contains("entry"), "one URL is not called an entry: {e}");
    }

    #[test]
    fn parses_a_real_cmdline() {
        let p = BootParams::parse(
            "BOOT_IMAGE=vmlinuz initrd=initramfs osie.url=http://192.0.2.1:8080/ osie.mac=52:54:00:00:00:01 console=ttyS0,115200 osie.debug\n",
        )
        .unwrap();
        assert_eq!(p.url, "http://192.0.2.1:8080");
        assert_eq!(p.mac.to_string(), "52:54:00:00:00:01");
        assert!(p.debug);
        assert!(!p.rescue);
        assert_eq!(p.ip, None);
    }

    #[test]
    fn static_ip_round_trips() {
        for v in [
            "192.0.2.10/24",
            "192.0.2.10/24,192.0.2.1",
            "192.0.2.10/24,192.0.2.1,192.0.2.53,198.51.100.53",
            "192.0.2.10/24,,192.0.2.53",
        ] {
            let ip = StaticIp::parse(v).unwrap();
            assert_eq!(ip.to_value(), v);
        }
        let p = BootParams::parse(
            "osie.url=http://x osie.mac=52:54:00:00:00:01 osie.ip=192.0.2.10/24,192.0.2.1,192.0.2.53",
        )
        .unwrap();
        let ip = p.ip.clone().unwrap();
        assert_eq!(ip.prefix, 24);
        assert_eq!(ip.gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(ip.dns, vec![Ipv4Addr::new(192, 0, 2, 53)]);
        assert_eq!(BootParams::parse(&p.to_args().join(" ")).unwrap(), p);
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(BootParams::parse("osie.mac=52:54:00:00:00:01"), Err(CmdlineError::Missing(KEY_URL)));
        assert_eq!(BootParams::parse("osie.url=http://x"), Err(CmdlineError::Missing(KEY_MAC)));
        let e = BootParams::parse("osie.url=http://x osie.mac=nope").unwrap_err().to_string();
        assert!(e.contains("osie.mac") && e.contains("nope"), "{e}");
        let e = BootParams::parse("osie.url=ftp://x osie.mac=52:54:00:00:00:01").unwrap_err().to_string();
        assert!(e.contains("osie.url"), "{e}");
        for bad in ["10.0.0.1", "10.0.0.1/33", "10.0.0.1/24,gw", "x/24", "10.0.0.1/24,10.0.0.254,dns"] {
            assert!(StaticIp::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(split_words(r#"a "b c" d=" e""#), vec!["a", "b c", "d= e"]);
        let p = BootParams::parse(r#"osie.url="http://x" osie.mac=52:54:00:00:00:01 osie.rescue=0"#).unwrap();
        assert_eq!(p.url, "http://x");
        assert!(!p.rescue);
    }
}
