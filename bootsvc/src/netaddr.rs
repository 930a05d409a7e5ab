//! Small facts about addresses that several layers read: an IPv4-mapped IPv6 address is the
//! IPv4 address it carries (a dual-stack listener's IPv4 callers), and the MAC an EUI-64
//! interface identifier was formed from.

use std::net::{IpAddr, Ipv6Addr};

use osie_api::MacAddr;

/// An IPv4-mapped IPv6 address as the IPv4 address it is; any other address as it is.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The MAC a modified EUI-64 interface identifier was formed from (RFC 4291 2.5.1 and
/// appendix A: `ff:fe` in the middle, the universal/local bit flipped), whatever the prefix:
/// link-local and SLAAC addresses as iPXE and Linux form them. Other identifiers
/// (stable-privacy, RFC 7217; DHCPv6) name no MAC, or name one by chance: a claim, never
/// proof.
pub fn eui64(a: Ipv6Addr) -> Option<MacAddr> {
    let o = a.octets();
    if o[11] != 0xff || o[12] != 0xfe {
        return None;
    }
    Some(MacAddr::new([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eui64_of_any_prefix() {
        let mac = MacAddr::new([0x52, 0x54, 0, 0, 0xa, 1]);
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(eui64(a("fe80::5054:ff:fe00:a01")), Some(mac));
        assert_eq!(eui64(a("2001:db8::5054:ff:fe00:a01")), Some(mac));
        assert_eq!(eui64(a("2001:db8::11")), None);
        assert_eq!(eui64(a("2001:db8::5054:ff:fd00:a01")), None);
    }

    #[test]
    fn mapped_is_ipv4() {
        assert_eq!(unmap("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(unmap("2001:db8::1".parse().unwrap()), "2001:db8::1".parse::<IpAddr>().unwrap());
    }
}
