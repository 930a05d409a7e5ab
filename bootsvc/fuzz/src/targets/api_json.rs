//! The wire contract (`osie_api`): what the installer reads (`Metadata`, the kernel command
//! line) and what bootsvc reads (`Event`), from hostile bytes.
//!
//! Input: byte 0 picks the type (0 Metadata, 1 Event, 2 kernel command line, 3 a size spec,
//! anything else: all of them), the rest is the text.
//!
//! Properties: parsing never panics; whatever parses serializes and parses back to the same
//! value (nothing is lost or changed on the way through bootsvc); an event applied to a
//! machine's state counts exactly one more event; a command line that parses gives back the
//! same parameters from its own `to_args` when its values are single words.
use bootsvc::state::MachineState;
use osie_api::size::SizeSpec;
use osie_api::{BootParams, Event, EventAck, Metadata};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(text: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(text).ok()?;
    let s = serde_json::to_string(&v).expect("a parsed value serializes");
    let back: T = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{s} does not parse back: {e}"));
    assert_eq!(back, v, "changed on the way through {s}");
    assert_eq!(serde_json::to_string(&back).expect("serializes"), s, "serialization not stable");
    Some(v)
}

pub fn run(data: &[u8]) {
    let [which, text @ ..] = data else { return };
    let all = *which > 3;
    if all || *which == 0 {
        roundtrip::<Metadata>(text);
    }
    if all || *which == 1 {
        if let Some(ev) = roundtrip::<Event>(text) {
            let s = MachineState::default().apply(&ev, "2026-01-01T00:00:00Z");
            assert_eq!(s.events, 1);
            let s2 = s.apply(&ev, "2026-01-01T00:00:01Z");
            assert_eq!(s2.events, 2);
        }
        roundtrip::<EventAck>(text);
    }
    let Ok(s) = std::str::from_utf8(text) else { return };
    if all || *which == 2 {
        if let Ok(p) = BootParams::parse(s) {
            let plain = |v: &str| !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '"');
            if p.urls().iter().all(|u| plain(u)) {
                let again = BootParams::parse(&p.to_args().join(" "))
                    .unwrap_or_else(|e| panic!("{:?} does not parse back: {e}", p.to_args()));
                assert_eq!(again, p);
            }
        }
    }
    if all || *which == 3 {
        if let Ok(size) = s.parse::<SizeSpec>() {
            let shown = size.to_string();
            assert_eq!(shown.parse::<SizeSpec>().ok(), Some(size), "{s:?} shows as {shown:?}");
        }
    }
}
