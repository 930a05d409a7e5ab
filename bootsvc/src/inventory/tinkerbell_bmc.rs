//! Tinkerbell's BMCs: a `Hardware`'s `spec.bmcRef` names a rufio `Machine`
//! (`bmc.tinkerbell.org/v1alpha1`) whose `spec.connection` says where the BMC is, and a
//! Kubernetes secret its credentials. osie maps it to the record's `bmc` when the rufio
//! `Machine` is in the same file (a `List`, as `kubectl get hardware,machines.bmc -o json`
//! prints) and the `Hardware` names the credentials file in the annotation
//! `osie/bmc-credentials` (a secret is not a file bootsvc can read). The reference is
//! `bootsvc/docs/inventory.md`.
//!
//! | rufio `Machine` | osie `bmc` |
//! |---|---|
//! | `spec.connection.providerOptions.preferredOrder`: first of `redfish`/`gofish` or `ipmitool`; else `redfish` when `providerOptions.redfish` is set; else IPMI | `protocol` |
//! | `spec.connection.host` + `providerOptions.redfish.port` (443) | `address` `https://host:port` |
//! | `spec.connection.host` + `providerOptions.ipmitool.port`, else `spec.connection.port` (623) | `address` `host:port` |
//! | `spec.connection.insecureTLS` | `insecure` (Redfish) |
//! | annotation `osie/bmc-credentials` on the `Hardware` | `credentials` |

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::bmc::{Bmc, BootMode, BootTarget, Protocol, DEFAULT_TIMEOUT_SECS};

/// Annotation of a `Hardware` naming its BMC's credentials file.
pub const CREDENTIALS_ANNOTATION: &str = "osie/bmc-credentials";

#[derive(Debug, Default, Deserialize)]
struct RufioMachine {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: RufioSpec,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RufioSpec {
    #[serde(default)]
    connection: Connection,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Connection {
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default, rename = "insecureTLS")]
    insecure_tls: bool,
    #[serde(default)]
    provider_options: Option<ProviderOptions>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderOptions {
    #[serde(default)]
    preferred_order: Vec<String>,
    #[serde(default)]
    redfish: Option<PortOption>,
    #[serde(default)]
    ipmitool: Option<PortOption>,
}

#[derive(Debug, Default, Clone, Deserialize)]
struct PortOption {
    #[serde(default)]
    port: Option<u16>,
}

/// The rufio `Machine`s of one file, by name.
#[derive(Debug, Default)]
pub struct Rufio {
    by_name: HashMap<String, Connection>,
}

/// Is this list item a rufio `Machine` (not a `Hardware`)?
pub fn is_rufio(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("Machine")
        && v.get("apiVersion").and_then(Value::as_str).is_some_and(|a| a.starts_with("bmc.tinkerbell.org/"))
}

impl Rufio {
    /// The rufio `Machine`s among a list's items (those that do not parse are left out: a
    /// `Hardware` naming one gets the problem).
    pub fn collect(items: &[Value]) -> Rufio {
        let by_name = items
            .iter()
            .filter(|v| is_rufio(v))
            .filter_map(|v| serde_json::from_value::<RufioMachine>(v.clone()).ok())
            .filter_map(|m| Some((m.metadata.name?, m.spec.connection)))
            .collect();
        Rufio { by_name }
    }

    /// The `bmc` of a `Hardware` whose `bmcRef` names `name`, with its credentials file.
    pub fn bmc(&self, name: &str, credentials: &str) -> Result<Bmc, String> {
        let c = self.by_name.get(name).ok_or_else(|| {
            format!("no rufio Machine {name:?} in this file (list it beside the Hardware: kubectl get hardware,machines.bmc -o json)")
        })?;
        if c.host.is_empty() {
            return Err(format!("rufio Machine {name:?} has no spec.connection.host"));
        }
        let opts = c.provider_options.clone().unwrap_or_default();
        let first = opts.preferred_order.iter().find_map(|p| match p.as_str() {
            "redfish" | "gofish" => Some(Protocol::Redfish),
            "ipmitool" => Some(Protocol::Ipmi),
            _ => None,
        });
        let protocol = first.unwrap_or(if opts.redfish.is_some() { Protocol::Redfish } else { Protocol::Ipmi });
        let host = if c.host.contains(':') { format!("[{}]", c.host) } else { c.host.clone() };
        let address = match protocol {
            Protocol::Redfish => format!("https://{host}:{}", opts.redfish.and_then(|r| r.port).unwrap_or(443)),
            Protocol::Ipmi => format!("{host}:{}", opts.ipmitool.and_then(|i| i.port).or(c.port).unwrap_or(623)),
        };
        Ok(Bmc {
            protocol,
            address,
            system: None,
            credentials: PathBuf::from(credentials),
            ca_file: None,
            insecure: protocol == Protocol::Redfish && c.insecure_tls,
            boot_mode: BootMode::default(),
            boot_target: BootTarget::default(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn machine(name: &str, connection: Value) -> Value {
        json!({"apiVersion": "bmc.tinkerbell.org/v1alpha1", "kind": "Machine", "metadata": {"name": name},
               "spec": {"connection": connection}})
    }

    #[test]
    fn rufio_connections_map() {
        let items = [
            machine(
                "r",
                json!({"host": "192.0.2.201", "insecureTLS": true,
                "providerOptions": {"preferredOrder": ["gofish", "ipmitool"], "redfish": {"port": 8443}}}),
            ),
            machine("i", json!({"host": "192.0.2.202", "port": 6230, "authSecretRef": {"name": "s"}})),
            json!({"apiVersion": "tinkerbell.org/v1alpha1", "kind": "Hardware", "metadata": {"name": "h"}}),
        ];
        assert!(is_rufio(&items[0]) && !is_rufio(&items[2]));
        let r = Rufio::collect(&items);
        let b = r.bmc("r", "/etc/osie/bmc/r.json").unwrap();
        assert_eq!((b.protocol, b.address.as_str(), b.insecure), (Protocol::Redfish, "https://192.0.2.201:8443", true));
        let b = r.bmc("i", "/etc/osie/bmc/i.json").unwrap();
        assert_eq!((b.protocol, b.address.as_str(), b.insecure), (Protocol::Ipmi, "192.0.2.202:6230", false));
        assert_eq!(b.credentials, PathBuf::from("/etc/osie/bmc/i.json"));
        assert!(r.bmc("nope", "/x").unwrap_err().contains("no rufio Machine \"nope\""));
    }
}
