//! What bootsvc's JSON log (`log.format = "json"`, one object per line, fields flattened)
//! says about the path of a machine before the installer runs: DHCP decisions, TFTP
//! transfers, iPXE script fetches and files served over HTTP, and (proxy mode) the
//! addresses a machine asked the site DHCP server for. Those steps send no events
//! (nothing runs on the machine yet that could), so the log is where they are seen.
//!
//! Pure: a line in, an [`Entry`] out; lines of no interest (or not JSON) are `None`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

use crate::clock::parse_rfc3339;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub time: SystemTime,
    pub seen: Seen,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// One DHCP decision (`bootsvc::dhcp::server`'s line per packet).
    Dhcp(Dhcp),
    /// A TFTP transfer ended.
    Tftp { client: Ipv4Addr, file: String, bytes: u64, complete: bool },
    /// `GET /boot/<mac>.ipxe`: `kind` is what was served (`installer`, `local`…).
    Script { mac: String, kind: String, peer: Ipv4Addr },
    /// A file sent over HTTP: `what` is `artifact`, `image` or `boot-program`.
    File { what: String, file: String, peer: Ipv4Addr, bytes: Option<u64> },
    /// Proxy mode: bootsvc saw `mac` ask the site DHCP server for `ip`, an address of that
    /// machine from then on.
    Requested { mac: String, ip: Ipv4Addr },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dhcp {
    pub mac: String,
    /// `discover`, `request`…
    pub msg: String,
    /// `offer`, `ack`, `nak`, `proxy-offer`…; `None` when the packet was ignored.
    pub reply: Option<String>,
    /// `bios-pxe`, `uefi-pxe`, `uefi-http`, `ipxe`…
    pub class: String,
    /// Option 93 (or option 60's) architecture; `None` for clients that send neither
    /// (an OS's DHCP client).
    pub arch: Option<u16>,
    pub yiaddr: Option<Ipv4Addr>,
    /// The boot file or URL handed out, `None` when none was.
    pub boot_file: Option<String>,
    /// Why no boot file was handed out (`netboot not allowed`), or why it was ignored.
    pub why_not: Option<String>,
}

/// Parse one log line.
pub fn parse_line(line: &str) -> Option<Entry> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    let time = parse_rfc3339(v.get("timestamp")?.as_str()?)?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64().or_else(|| x.as_str().and_then(|s| s.parse().ok())));
    let ip = |k: &str| s(k).and_then(|a| ipv4_of(&a));
    let message = s("message")?;
    let seen = if message.starts_with("DHCP ") && v.get("msg").is_some() {
        let boot = s("boot_file");
        let (boot_file, why_not) = match boot {
            // `none (<reason>)`; the reason may hold parentheses of its own: strip only the outer pair.
            Some(b) if b.starts_with("none (") => {
                let why = &b["none (".len()..];
                (None, Some(why.strip_suffix(')').unwrap_or(why).to_string()))
            }
            Some(b) => (Some(b), None),
            None => (None, s("reason")),
        };
        Seen::Dhcp(Dhcp {
            mac: s("mac")?,
            msg: s("msg")?,
            reply: s("reply"),
            class: s("class").unwrap_or_default(),
            arch: s("arch").and_then(|a| a.parse().ok()),
            yiaddr: ip("yiaddr"),
            boot_file,
            why_not,
        })
    } else if message.starts_with("TFTP transfer ") {
        Seen::Tftp {
            client: ip("client")?,
            file: s("file")?,
            bytes: n("bytes").unwrap_or(0),
            complete: s("outcome").as_deref() == Some("complete"),
        }
    } else if message == "iPXE script" {
        Seen::Script { mac: s("mac")?, kind: s("kind").unwrap_or_default(), peer: ip("peer")? }
    } else if message.starts_with("file served") {
        Seen::File { what: s("what")?, file: s("file")?, peer: ip("peer")?, bytes: n("bytes") }
    } else if message.starts_with("DHCP: ") && message.contains(" asked for ") {
        Seen::Requested { mac: s("mac")?, ip: ip("ip")? }
    } else {
        return None;
    };
    Some(Entry { time, seen })
}

/// `192.0.2.5:1234` or `192.0.2.5` → the address.
fn ipv4_of(s: &str) -> Option<Ipv4Addr> {
    let host = s.rsplit_once(':').map_or(s, |(h, _)| h);
    host.trim_start_matches("::ffff:").parse().ok()
}

/// The addresses `mac` asked the site DHCP server for (proxy mode), first seen first.
pub fn requested(log: &[Entry], mac: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for e in log {
        if let Seen::Requested { mac: m, ip } = &e.seen {
            if m == mac && !out.contains(ip) {
                out.push(*ip);
            }
        }
    }
    out
}

/// Every entry of interest in the log file (missing file: none yet).
pub fn read(path: &Path) -> Vec<Entry> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(parse_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as bootsvc writes them (copied from a real run's log).
    const DHCP_ACK: &str = r#"{"timestamp":"2026-11-21T19:40:01.500000Z","level":"INFO","message":"DHCP request from 52:54:00:e2:00:01: ack 192.0.2.21 (uefi-pxe), boot file ipxe.efi","mac":"52:54:00:e2:00:01","msg":"request","port":67,"from":"0.0.0.0:68","class":"uefi-pxe","arch":"7","arch_from":"Some(Option93)","host":"bios1","reply":"ack","yiaddr":"192.0.2.21","dest":"255.255.255.255:68","boot_file":"ipxe.efi","target":"bootsvc::dhcp::server"}"#;
    const DHCP_NO_BOOT: &str = r#"{"timestamp":"2026-11-21T19:45:00Z","level":"INFO","message":"DHCP discover from 52:54:00:e2:00:01: offer 192.0.2.21 (bios-pxe), boot file none (netboot not allowed)","mac":"52:54:00:e2:00:01","msg":"discover","class":"bios-pxe","arch":"-","reply":"offer","yiaddr":"192.0.2.21","boot_file":"none (netboot not allowed)"}"#;

    #[test]
    fn dhcp_decisions() {
        let e = parse_line(DHCP_ACK).unwrap();
        let Seen::Dhcp(d) = e.seen else { panic!("{e:?}") };
        assert_eq!((d.msg.as_str(), d.reply.as_deref(), d.class.as_str()), ("request", Some("ack"), "uefi-pxe"));
        assert_eq!((d.arch, d.yiaddr), (Some(7), Some(Ipv4Addr::new(192, 0, 2, 21))));
        assert_eq!((d.boot_file.as_deref(), d.why_not), (Some("ipxe.efi"), None));

        let Seen::Dhcp(d) = parse_line(DHCP_NO_BOOT).unwrap().seen else { panic!() };
        assert_eq!((d.arch, d.boot_file, d.why_not.as_deref()), (None, None, Some("netboot not allowed")));
        // A reason with parentheses of its own keeps them.
        let nested = DHCP_NO_BOOT.replace("none (netboot not allowed)", "none (not a netboot client (no option 93))");
        let Seen::Dhcp(d) = parse_line(&nested).unwrap().seen else { panic!() };
        assert_eq!(d.why_not.as_deref(), Some("not a netboot client (no option 93)"));
    }

    #[test]
    fn transfers_scripts_and_files() {
        let tftp = r#"{"timestamp":"2026-11-21T19:40:02Z","message":"TFTP transfer complete: 1034240 bytes of 1034240 in 0.80 s","client":"192.0.2.21:1472","file":"ipxe.efi","bytes":1034240,"size":1034240,"secs":0.8,"outcome":"complete"}"#;
        assert_eq!(
            parse_line(tftp).unwrap().seen,
            Seen::Tftp {
                client: Ipv4Addr::new(192, 0, 2, 21),
                file: "ipxe.efi".into(),
                bytes: 1034240,
                complete: true
            }
        );
        let script = r#"{"timestamp":"2026-11-21T19:40:05Z","message":"iPXE script","mac":"52:54:00:e2:00:01","host":"bios1","peer":"192.0.2.21:25001","kind":"installer"}"#;
        assert_eq!(
            parse_line(script).unwrap().seen,
            Seen::Script {
                mac: "52:54:00:e2:00:01".into(),
                kind: "installer".into(),
                peer: Ipv4Addr::new(192, 0, 2, 21)
            }
        );
        let file = r#"{"timestamp":"2026-11-21T19:40:06Z","message":"file served: artifact vmlinuz to 192.0.2.21:25002 (bios1)","peer":"192.0.2.21:25002","what":"artifact","file":"vmlinuz","status":200,"bytes":"8247232","host":"bios1","mac":"52:54:00:e2:00:01"}"#;
        assert_eq!(
            parse_line(file).unwrap().seen,
            Seen::File {
                what: "artifact".into(),
                file: "vmlinuz".into(),
                peer: Ipv4Addr::new(192, 0, 2, 21),
                bytes: Some(8247232)
            }
        );
    }

    #[test]
    fn addresses_asked_for() {
        let line = r#"{"timestamp":"2026-12-05T21:37:04.575187Z","level":"INFO","message":"DHCP: 52:54:00:e2:0b:01 asked for 192.0.2.153: an address of node1 (metadata, events, phone-home)","mac":"52:54:00:e2:0b:01","host":"node1","ip":"192.0.2.153","relayed":false,"superseded":"None","target":"bootsvc::dhcp::seen"}"#;
        let e = parse_line(line).unwrap();
        let ip = Ipv4Addr::new(192, 0, 2, 153);
        assert_eq!(e.seen, Seen::Requested { mac: "52:54:00:e2:0b:01".into(), ip });
        let again = parse_line(&line.replace("21:37:04", "21:38:04")).unwrap();
        assert_eq!(requested(&[e.clone(), again], "52:54:00:e2:0b:01"), [ip]);
        assert!(requested(&[e], "52:54:00:e2:0b:02").is_empty());
    }

    #[test]
    fn other_lines_are_skipped() {
        for l in [
            "",
            "not json",
            r#"{"timestamp":"2026-11-21T19:40:06Z","message":"DHCP serving","mode":"Reservation"}"#,
            r#"{"message":"iPXE script","mac":"52:54:00:e2:00:01","peer":"192.0.2.21:1"}"#,
        ] {
            assert_eq!(parse_line(l), None, "{l}");
        }
    }
}
