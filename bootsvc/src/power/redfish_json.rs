//! The Redfish documents bootsvc reads and writes, as pure functions: the Systems
//! collection, a ComputerSystem (power state, identity, reset action and the reset types and
//! boot targets it allows), the boot-override PATCH body, the reset type to send for an
//! action, and the BMC's own error message out of an error body. The client
//! ([`super::redfish`]) does the HTTP.

use serde_json::{json, Value};

use super::{PowerState, SystemInfo};
use crate::inventory::bmc::{BootMode, BootTarget};

/// What bootsvc needs of a ComputerSystem.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct System {
    pub power: PowerState,
    pub info: SystemInfo,
    /// `Actions."#ComputerSystem.Reset".target`.
    pub reset_target: Option<String>,
    /// `ResetType@Redfish.AllowableValues` (empty: not said, so the standard ones are tried).
    pub reset_types: Vec<String>,
    /// `Boot."BootSourceOverrideTarget@Redfish.AllowableValues"`.
    pub boot_targets: Vec<String>,
    /// `Boot.BootSourceOverrideMode` is there: the BMC lets the firmware mode be chosen.
    pub boot_mode_settable: bool,
}

/// A reset as the operator means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    On,
    Off,
    GracefulOff,
    /// Off then on, whatever the state was (for a reinstall: the boot override takes effect).
    Cycle,
}

/// The sessions collection the service root links to (`Links.Sessions`), if the BMC has
/// a session service.
pub fn sessions_path(root: &Value) -> Option<String> {
    let p = root.get("Links")?.get("Sessions")?.get("@odata.id")?.as_str()?;
    p.starts_with("/redfish/").then(|| p.to_owned())
}

/// The member paths of a collection (`/redfish/v1/Systems`).
pub fn members(v: &Value) -> Result<Vec<String>, String> {
    let m = v.get("Members").and_then(Value::as_array).ok_or("no Members array: not a Redfish collection")?;
    m.iter()
        .map(|x| {
            x.get("@odata.id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| "a member without @odata.id".to_string())
        })
        .collect()
}

/// A ComputerSystem document.
pub fn system(v: &Value) -> Result<System, String> {
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.trim().is_empty()).map(|s| s.trim().to_owned());
    let power = match v.get("PowerState").and_then(Value::as_str) {
        Some("On") => PowerState::On,
        Some("Off") => PowerState::Off,
        Some("PoweringOn") => PowerState::PoweringOn,
        Some("PoweringOff") => PowerState::PoweringOff,
        Some(_) | None => PowerState::Unknown,
    };
    let reset = v.get("Actions").and_then(|a| a.get("#ComputerSystem.Reset"));
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    Ok(System {
        power,
        info: SystemInfo {
            manufacturer: s("Manufacturer"),
            model: s("Model"),
            serial: s("SerialNumber"),
            bios_version: s("BiosVersion"),
            uuid: s("UUID"),
        },
        reset_target: reset.and_then(|r| r.get("target")).and_then(Value::as_str).map(str::to_owned),
        reset_types: strings(reset.and_then(|r| r.get("ResetType@Redfish.AllowableValues"))),
        boot_targets: strings(v.get("Boot").and_then(|b| b.get("BootSourceOverrideTarget@Redfish.AllowableValues"))),
        boot_mode_settable: v.get("Boot").and_then(|b| b.get("BootSourceOverrideMode")).is_some(),
    })
}

/// The `ResetType` to send for `r`, given what the system allows (and its power state, for
/// a cycle: a machine that is off is only switched on).
pub fn reset_type(r: Reset, allowed: &[String], power: PowerState) -> Result<&'static str, String> {
    let ok = |t: &str| allowed.is_empty() || allowed.iter().any(|a| a == t);
    let pick =
        |choices: &[&'static str]| -> Result<&'static str, String> {
            choices.iter().copied().find(|c| ok(c)).ok_or_else(|| {
                format!("the BMC allows none of {} (it allows {})", choices.join(", "), allowed.join(", "))
            })
        };
    match r {
        Reset::On => pick(&["On", "PushPowerButton"]),
        Reset::Off => pick(&["ForceOff"]),
        Reset::GracefulOff => pick(&["GracefulShutdown"]),
        Reset::Cycle if power == PowerState::Off => pick(&["On", "PushPowerButton"]),
        Reset::Cycle => pick(&["PowerCycle", "ForceRestart"]),
    }
}

/// The PATCH body of a one-time network boot. The firmware mode is sent only to a system
/// that shows `BootSourceOverrideMode` (`sys.boot_mode_settable`): one that does not would
/// take it as a request to change its firmware, and refuse.
pub fn boot_once(target: BootTarget, mode: BootMode, sys: &System) -> Result<Value, String> {
    let t = match target {
        BootTarget::Pxe => "Pxe",
        BootTarget::UefiHttp => "UefiHttp",
    };
    let allowed = &sys.boot_targets;
    if !allowed.is_empty() && !allowed.iter().any(|a| a == t) {
        return Err(format!("the BMC does not offer boot target {t} (it offers {})", allowed.join(", ")));
    }
    let mut boot = json!({"BootSourceOverrideTarget": t, "BootSourceOverrideEnabled": "Once"});
    if sys.boot_mode_settable {
        boot["BootSourceOverrideMode"] = json!(match mode {
            BootMode::Uefi => "UEFI",
            BootMode::Legacy => "Legacy",
        });
    }
    Ok(json!({ "Boot": boot }))
}

/// The BMC's explanation in an error body: `error.@Message.ExtendedInfo[].Message`, else
/// `error.message`, else the start of the body. Bounded and on one line.
pub fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let msg = match serde_json::from_str::<Value>(&text) {
        Ok(v) => {
            let e = v.get("error").unwrap_or(&v);
            let ext: Vec<&str> = e
                .get("@Message.ExtendedInfo")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|i| i.get("Message").and_then(Value::as_str)).collect())
                .unwrap_or_default();
            if !ext.is_empty() {
                ext.join("; ")
            } else if let Some(m) = e.get("message").and_then(Value::as_str) {
                m.to_owned()
            } else {
                text.to_string()
            }
        }
        Err(_) => text.to_string(),
    };
    let one_line: String = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "(empty answer)".into();
    }
    let mut out: String = one_line.chars().take(200).collect();
    if one_line.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ComputerSystem as sushy-tools' libvirt driver serves it (trimmed).
    const SUSHY_SYSTEM: &str = r##"{
        "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
        "Id": "5e1e5a0c-1b7f-4a57-9f6b-1c1b1c1b1c1b", "Name": "osie-m1",
        "UUID": "5e1e5a0c-1b7f-4a57-9f6b-1c1b1c1b1c1b",
        "Manufacturer": "Sushy Emulator", "Model": "", "SerialNumber": null,
        "PowerState": "Off",
        "Boot": {"BootSourceOverrideEnabled": "Continuous", "BootSourceOverrideTarget": "Hdd",
                 "BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", "Cd", "Hdd"],
                 "BootSourceOverrideMode": "UEFI"},
        "BiosVersion": "1.2.3",
        "Actions": {"#ComputerSystem.Reset": {
            "target": "/redfish/v1/Systems/5e1e/Actions/ComputerSystem.Reset",
            "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "GracefulShutdown", "GracefulRestart",
                                                  "ForceRestart", "Nmi", "ForceOn"]}},
        "@odata.id": "/redfish/v1/Systems/5e1e"
    }"##;

    #[test]
    fn reads_a_system() {
        let s = system(&serde_json::from_str(SUSHY_SYSTEM).unwrap()).unwrap();
        assert_eq!(s.power, PowerState::Off);
        assert_eq!(s.info.manufacturer.as_deref(), Some("Sushy Emulator"));
        assert_eq!((s.info.model, s.info.serial), (None, None), "empty and null are absent");
        assert_eq!(s.info.bios_version.as_deref(), Some("1.2.3"));
        assert_eq!(s.reset_target.as_deref(), Some("/redfish/v1/Systems/5e1e/Actions/ComputerSystem.Reset"));
        assert_eq!(s.boot_targets, ["Pxe", "Cd", "Hdd"]);
        assert!(system(&json!([1])).is_err());
        assert_eq!(system(&json!({"PowerState": "Paused"})).unwrap().power, PowerState::Unknown);
    }

    #[test]
    fn session_service_from_the_root() {
        let root = json!({"Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}});
        assert_eq!(sessions_path(&root).as_deref(), Some("/redfish/v1/SessionService/Sessions"));
        assert_eq!(sessions_path(&json!({"Systems": {"@odata.id": "/redfish/v1/Systems"}})), None);
        assert_eq!(sessions_path(&json!({"Links": {"Sessions": {"@odata.id": "https://elsewhere/x"}}})), None);
    }

    #[test]
    fn collection_members() {
        let v = json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}, {"@odata.id": "/redfish/v1/Systems/2"}]});
        assert_eq!(members(&v).unwrap(), ["/redfish/v1/Systems/1", "/redfish/v1/Systems/2"]);
        assert!(members(&json!({"Members": [{"id": 1}]})).is_err());
        assert!(members(&json!({"error": "x"})).is_err());
    }

    #[test]
    fn reset_types_follow_what_the_bmc_allows() {
        let sushy: Vec<String> = ["On", "ForceOff", "GracefulShutdown", "ForceRestart"].map(String::from).to_vec();
        assert_eq!(reset_type(Reset::Cycle, &sushy, PowerState::On).unwrap(), "ForceRestart");
        assert_eq!(reset_type(Reset::Cycle, &sushy, PowerState::Off).unwrap(), "On", "off: just switched on");
        assert_eq!(reset_type(Reset::Cycle, &[], PowerState::On).unwrap(), "PowerCycle", "unsaid: the standard one");
        assert_eq!(reset_type(Reset::Off, &sushy, PowerState::On).unwrap(), "ForceOff");
        assert_eq!(reset_type(Reset::GracefulOff, &sushy, PowerState::On).unwrap(), "GracefulShutdown");
        let button = vec!["PushPowerButton".to_string()];
        assert_eq!(reset_type(Reset::On, &button, PowerState::Off).unwrap(), "PushPowerButton");
        let e = reset_type(Reset::Off, &button, PowerState::On).unwrap_err();
        assert!(e.contains("none of ForceOff") && e.contains("PushPowerButton"), "{e}");
    }

    #[test]
    fn boot_override_body() {
        let sys = System { boot_mode_settable: true, ..Default::default() };
        let b = boot_once(BootTarget::Pxe, BootMode::Legacy, &sys).unwrap();
        assert_eq!(
            b,
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once",
                            "BootSourceOverrideMode": "Legacy"}})
        );
        // sushy-tools' libvirt domain without a loader shows no mode: none is sent.
        let sushy = system(&serde_json::from_str(SUSHY_SYSTEM).unwrap()).unwrap();
        assert!(sushy.boot_mode_settable);
        let no_mode = System { boot_mode_settable: false, ..sushy.clone() };
        assert_eq!(
            boot_once(BootTarget::Pxe, BootMode::Uefi, &no_mode).unwrap(),
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})
        );
        let e = boot_once(BootTarget::UefiHttp, BootMode::Uefi, &sushy).unwrap_err();
        assert!(e.contains("UefiHttp") && e.contains("Pxe, Cd, Hdd"), "{e}");
    }

    #[test]
    fn error_messages() {
        let body = br#"{"error": {"code": "Base.1.0.GeneralError", "message": "A general error has occurred.",
            "@Message.ExtendedInfo": [{"Message": "The action ForceOff is not supported."}]}}"#;
        assert_eq!(error_message(body), "The action ForceOff is not supported.");
        assert_eq!(error_message(br#"{"error": {"message": "nope"}}"#), "nope");
        assert_eq!(error_message(b"<html>\n  500  </html>"), "<html> 500 </html>");
        assert_eq!(error_message(b""), "(empty answer)");
        assert!(error_message(&[b'x'; 1000]).chars().count() <= 201);
    }
}
