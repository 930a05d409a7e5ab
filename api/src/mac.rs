//! MAC addresses as they appear in config files, URLs and DHCP packets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet MAC address. Displays as lower-case `aa:bb:cc:dd:ee:ff`; parses `:` or `-`
/// separated forms in either case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid MAC address {0:?}: expected six hex pairs like 52:54:00:12:34:56")]
pub struct MacParseError(pub String);

impl MacAddr {
    pub const fn new(b: [u8; 6]) -> Self {
        MacAddr(b)
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// From the first six bytes of a DHCP `chaddr`; `None` if shorter.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        let b: [u8; 6] = b.get(..6)?.try_into().ok()?;
        Some(MacAddr(b))
    }

    /// `aa-bb-cc-dd-ee-ff`, the form some tools (and PXELINUX paths) use.
    pub fn dashed(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let parts: Vec<&str> = s.trim().split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_separators_and_cases() {
        let a: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        let b: MacAddr = "52-54-00-ab-CD-0F".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!(a.dashed(), "52-54-00-ab-cd-0f");
    }

    #[test]
    fn rejects_malformed() {
        for bad in
            ["", "52:54:00:ab:cd", "52:54:00:ab:cd:0f:11", "5:54:00:ab:cd:0f", "zz:54:00:ab:cd:0f", "525400abcd0f"]
        {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serde_round_trip() {
        let m: MacAddr = serde_json::from_str("\"52:54:00:00:00:01\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"52:54:00:00:00:01\"");
        assert!(serde_json::from_str::<MacAddr>("\"nope\"").is_err());
    }
}
