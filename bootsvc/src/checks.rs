//! Small pure checks shared by config and inventory validation. Each returns `Err(why)`
//! phrased to follow the field name: `hostname: <why>`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, each
/// 1–63 characters, 253 in all.
/// A site's name (`database.site`, a record's `site`): 1 to 63 lowercase letters, digits
/// and inner hyphens, as it appears in logs, metrics and the database.
pub fn site_name(s: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?} is not a site name: 1 to 63 lowercase letters, digits or inner hyphens"))
    }
}

/// A label's name part (and a value when not empty): 1 to 63 letters, digits, `-`, `_`, `.`,
/// beginning and ending with a letter or digit (Kubernetes' rule, so Tinkerbell's labels
/// carry over).
fn label_word(s: &str) -> bool {
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && edge(s.as_bytes().first())
        && edge(s.as_bytes().last())
}

/// A label key: a name, optionally after a DNS prefix and `/` (`example.com/rack`).
pub fn label_key(k: &str) -> Result<(), String> {
    let ok = match k.split_once('/') {
        Some((prefix, name)) => prefix.len() <= 253 && hostname(prefix).is_ok() && label_word(name),
        None => label_word(k),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{k:?} is not a label key: a name of 1 to 63 letters, digits, '-', '_' or '.' (beginning and \
             ending with a letter or digit), optionally after a DNS prefix and '/'"
        ))
    }
}

/// A label value: empty, or as a label name.
pub fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || label_word(v) {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a label value: empty, or 1 to 63 letters, digits, '-', '_' or '.' beginning and ending \
             with a letter or digit"
        ))
    }
}

pub fn hostname(h: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > 253 {
        return Err(format!("{h:?} is not a host name: 1 to 253 characters"));
    }
    for label in h.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{h:?} is not a host name: labels are 1 to 63 letters, digits or inner hyphens, separated by dots"
            ));
        }
    }
    Ok(())
}

/// A plain file name inside a served directory: letters, digits, `.`, `_`, `-`, `+`, not
/// starting with a dot. Such names go into URLs and iPXE scripts unescaped.
pub fn file_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a plain file name: letters, digits, '.', '_', '-', '+', not starting with '.'"))
    }
}

/// An identifier that goes into URL paths and cloud-init meta-data: `i-525400000001`,
/// a UUID, a MAC.
pub fn instance_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{id:?} is not a valid instance id: 1 to 128 letters, digits, '.', '_', ':', '-'"))
    }
}

pub fn sha256_hex(s: &str) -> Result<(), String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("{s:?} is not a sha256: 64 hex digits"))
    }
}

/// An OpenSSH public key line: `<type> <base64> [comment]`, one line.
pub fn ssh_key(k: &str) -> Result<(), String> {
    if k.contains(['\n', '\r', '\0']) {
        return Err("an SSH key is one line".into());
    }
    let mut parts = k.split_whitespace();
    let kind = parts.next().unwrap_or_default();
    let known = kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
    if !known || parts.next().is_none() {
        return Err(format!(
            "{:?} is not an OpenSSH public key (\"ssh-ed25519 AAAA… comment\")",
            k.chars().take(40).collect::<String>()
        ));
    }
    Ok(())
}

/// Base URL for machines: http(s), a host, no query or fragment, safe in iPXE scripts.
pub fn base_url(url: &str) -> Result<(), String> {
    crate::ipxe::check_url(url, &["http", "https"])?;
    if url.contains(['?', '#']) {
        return Err(format!("{url:?} has a query or fragment; give a base URL like http://192.0.2.1:8080"));
    }
    Ok(())
}

/// A netmask (`255.255.255.0`) as a prefix length.
pub fn netmask_prefix(mask: Ipv4Addr) -> Result<u8, String> {
    let m = u32::from(mask);
    if m.leading_ones() + m.trailing_zeros() != 32 {
        return Err(format!("{mask} is not a netmask (ones then zeros)"));
    }
    Ok(m.leading_ones() as u8)
}

/// The network containing `a` for a prefix length, as (network, broadcast).
pub fn subnet(a: Ipv4Addr, prefix: u8) -> (Ipv4Addr, Ipv4Addr) {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
    let net = u32::from(a) & mask;
    (Ipv4Addr::from(net), Ipv4Addr::from(net | !mask))
}

/// A host address usable on a network: not unspecified, broadcast, multicast or loopback.
pub fn host_address(a: Ipv4Addr) -> Result<(), String> {
    if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
        Err(format!("{a} is not a host address"))
    } else {
        Ok(())
    }
}

/// An IPv6 address (or prefix) a machine can reach bootsvc at without a zone: global or
/// unique local, not link-local, multicast, loopback, unspecified or IPv4-mapped.
pub fn host_address6(a: Ipv6Addr) -> Result<(), String> {
    if a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || a.is_unicast_link_local()
        || a.to_ipv4_mapped().is_some()
    {
        Err(format!("{a} is not a global or unique local IPv6 address"))
    } else {
        Ok(())
    }
}

pub fn existing_dir(p: &Path) -> Result<(), String> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("{} is not a directory", p.display())),
        Err(e) => Err(format!("directory {}: {e}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["node1", "node-1.rack2.example", "a", &"a".repeat(63)] {
            hostname(ok).unwrap();
        }
        for bad in ["", "-a", "a-", "a..b", "a b", "a\nb", "nöde", "a_b", &"a".repeat(64), "${x}"] {
            assert!(hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_names() {
        file_name("vmlinuz").unwrap();
        file_name("debian-12+cloud.raw.zst").unwrap();
        for bad in ["", ".hidden", "a/b", "..", "a b", "x\n"] {
            assert!(file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask_prefix("255.255.255.0".parse().unwrap()), Ok(24));
        assert_eq!(netmask_prefix("0.0.0.0".parse().unwrap()), Ok(0));
        assert_eq!(netmask_prefix("255.255.255.255".parse().unwrap()), Ok(32));
        assert!(netmask_prefix("255.0.255.0".parse().unwrap()).is_err());
        let (n, b) = subnet("192.0.2.77".parse().unwrap(), 26);
        assert_eq!((n.to_string(), b.to_string()), ("192.0.2.64".into(), "192.0.2.127".into()));
    }

    #[test]
    fn ssh_keys() {
        ssh_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE ops@example").unwrap();
        ssh_key("ecdsa-sha2-nistp256 AAAA").unwrap();
        for bad in ["AAAA", "ssh-rsa", "ssh-rsa AAAA\nssh-rsa BBBB", "rsa AAAA"] {
            assert!(ssh_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base_urls() {
        base_url("http://192.0.2.1:8080").unwrap();
        base_url("https://boot.example/osie").unwrap();
        for bad in ["192.0.2.1:8080", "ftp://x", "http://x/?a", "http://x y", "http://x/${a}"] {
            assert!(base_url(bad).is_err(), "{bad:?}");
        }
    }
}
