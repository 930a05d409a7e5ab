//! Sizes as operators write them: `512MiB`, `20G`, `25%`, `rest`, or plain bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSpec {
    Bytes(u64),
    /// Percent (1..=100) of the disk.
    Percent(u8),
    /// Whatever is left.
    Rest,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid size {0:?}: expected bytes, a number with K/M/G/T(iB) suffix, a percent, or \"rest\"")]
pub struct SizeParseError(pub String);

/// Parse `512MiB`, `1.5G`, `4096`, `2TB`. Decimal suffixes (KB, MB…) are powers of 1000,
/// binary ones (K, KiB, M, MiB…) powers of 1024, as `sgdisk` reads them.
pub fn parse_bytes(s: &str) -> Result<u64, SizeParseError> {
    let err = || SizeParseError(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(err()),
    };
    if num.is_empty() {
        return Err(err());
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(err);
    }
    let f: f64 = num.parse().map_err(|_| err())?;
    let v = f * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(err());
    }
    Ok(v as u64)
}

impl FromStr for SizeSpec {
    type Err = SizeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("rest") {
            return Ok(SizeSpec::Rest);
        }
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<u8>() {
                Ok(n) if (1..=100).contains(&n) => Ok(SizeSpec::Percent(n)),
                _ => Err(SizeParseError(s.to_string())),
            };
        }
        parse_bytes(t).map(SizeSpec::Bytes)
    }
}

impl fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeSpec::Bytes(b) => write!(f, "{b}"),
            SizeSpec::Percent(p) => write!(f, "{p}%"),
            SizeSpec::Rest => f.write_str("rest"),
        }
    }
}

impl Serialize for SizeSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SizeSpec::Bytes(b) => s.serialize_u64(*b),
            _ => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for SizeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(SizeSpec::Bytes(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        for bad in ["", "MiB", "12XB", "-1", "1e9", "99999999999999999999T"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parses_specs() {
        assert_eq!("rest".parse(), Ok(SizeSpec::Rest));
        assert_eq!("25%".parse(), Ok(SizeSpec::Percent(25)));
        assert!("0%".parse::<SizeSpec>().is_err());
        assert!("101%".parse::<SizeSpec>().is_err());
        assert_eq!(serde_json::from_str::<SizeSpec>("1024").unwrap(), SizeSpec::Bytes(1024));
        assert_eq!(serde_json::from_str::<SizeSpec>("\"1KiB\"").unwrap(), SizeSpec::Bytes(1024));
        assert!(serde_json::from_str::<SizeSpec>("\"lots\"").is_err());
    }
}
