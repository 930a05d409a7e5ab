//! Tinkerbell `Template`s and `Workflow`s (tinkerbell.org/v1alpha1, as `kubectl get
//! templates,workflows -o json` prints them, listed beside the `Hardware`), read into the
//! install plan of the Hardware a Workflow names: the work Tinkerbell's action containers do,
//! done natively by the installer. The reference is `bootsvc/docs/inventory.md`.
//!
//! The Template's `spec.data` is YAML with Go-template expressions, resolved first
//! ([`super::gotemplate`]) from the Hardware's disks and the Workflow's `hardwareMap`; then
//! its one task's actions, in order, by the action's image name:
//!
//! | action | osie |
//! |---|---|
//! | `image2disk` (`IMG_URL`, `COMPRESSED`, `DEST_DISK`) | `install.image` (`url`; format `auto` when compressed, else `raw`), `install.disk.path` |
//! | `writefile` (`DEST_DISK`, `FS_TYPE`, `DEST_PATH`, `CONTENTS`, `UID`, `GID`, `MODE`, `DIRMODE`) | a `write_file` step in that partition |
//! | `cexec` (`BLOCK_DEVICE`, `FS_TYPE`, `CHROOT`, `DEFAULT_INTERPRETER`, `CMD_LINE`) | a `run` step in that partition (one per `;` command without an interpreter, as cexec does) |
//! | `kexec` (`BLOCK_DEVICE`, `FS_TYPE`) | `install.finish = kexec` (last) |
//!
//! Any other action, an option osie does not map, or an expression it cannot resolve is a
//! problem naming the action and its image: never skipped. The image's digest comes from
//! the Template's annotation `osie/image-sha256` (or `osie/image-checksums-url`, with
//! `osie/image-signature-url`), else from the manifest in `artifacts.images_dir` of the file
//! the URL names (`super::validate`, `crate::metadata`).

use std::collections::BTreeMap;

use osie_api::metadata::{DiskHints, Finish, ImageFormat};
use osie_api::steps::{Mode, Run, Step, WriteFile};
use serde::Deserialize;

use super::gotemplate::{self, Data};
use super::model::{ImageRef, Install};

pub const SHA256_ANNOTATION: &str = "osie/image-sha256";
pub const CHECKSUMS_ANNOTATION: &str = "osie/image-checksums-url";
pub const SIGNATURE_ANNOTATION: &str = "osie/image-signature-url";

/// Kinds read here, not records themselves.
pub fn is_workflow_kind(item: &serde_json::Value) -> bool {
    matches!(item.get("kind").and_then(|k| k.as_str()), Some("Template" | "Workflow"))
}

#[derive(Debug, Default, Deserialize)]
struct Object<S> {
    #[serde(default)]
    metadata: Meta,
    #[serde(default = "Option::default")]
    spec: Option<S>,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct WorkflowSpec {
    #[serde(default, rename = "templateRef")]
    template_ref: Option<String>,
    #[serde(default, rename = "hardwareRef")]
    hardware_ref: Option<String>,
    #[serde(default, rename = "hardwareMap")]
    hardware_map: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct TemplateSpec {
    #[serde(default)]
    data: Option<String>,
}

struct Item<S> {
    /// `items[3]`
    at: String,
    obj: Object<S>,
}

/// The Templates and Workflows of one file.
#[derive(Default)]
pub struct Workflows {
    workflows: Vec<Item<WorkflowSpec>>,
    templates: Vec<Item<TemplateSpec>>,
    /// Items that did not parse: (field, what).
    bad: Vec<(String, String)>,
}

/// A machine's plan, and where each osie field came from (absolute paths in the file).
#[derive(Debug)]
pub struct Planned {
    pub install: Install,
    pub origins: Vec<(String, String)>,
}

/// A problem: the field (absolute in the file) and what.
pub type Refusal = (String, String);

impl Workflows {
    pub fn collect(items: &[serde_json::Value]) -> Workflows {
        let mut w = Workflows::default();
        for (i, item) in items.iter().enumerate() {
            let at = format!("items[{i}]");
            let kind = item.get("kind").and_then(|k| k.as_str());
            let r = match kind {
                Some("Workflow") => {
                    serde_json::from_value(item.clone()).map(|obj| w.workflows.push(Item { at: at.clone(), obj }))
                }
                Some("Template") => {
                    serde_json::from_value(item.clone()).map(|obj| w.templates.push(Item { at: at.clone(), obj }))
                }
                _ => Ok(()),
            };
            if let Err(e) = r {
                w.bad.push((at, format!("a {} that osie cannot read: {e}", kind.unwrap_or_default())));
            }
        }
        w
    }

    /// Problems of the Templates and Workflows themselves (reported once per file).
    pub fn problems(&self) -> Vec<Refusal> {
        let mut out = self.bad.clone();
        for w in &self.workflows {
            if w.obj.spec.as_ref().and_then(|s| s.hardware_ref.as_deref()).is_none_or(|s| s.trim().is_empty()) {
                out.push((
                    format!("{}.spec.hardwareRef", w.at),
                    "missing: osie installs the Workflow on the Hardware it names".into(),
                ));
            }
        }
        out
    }

    /// The plan for the Hardware named `hw`, with `disks` (its `spec.disks[].device`) and
    /// `macs`: `None` when no Workflow names it.
    pub fn plan(&self, hw: &str, disks: &[String], macs: &[String]) -> Option<Result<Planned, Vec<Refusal>>> {
        let mine: Vec<&Item<WorkflowSpec>> = self
            .workflows
            .iter()
            .filter(|w| w.obj.spec.as_ref().and_then(|s| s.hardware_ref.as_deref()) == Some(hw))
            .collect();
        let wf = match mine.as_slice() {
            [] => return None,
            [one] => *one,
            several => {
                let names: Vec<String> = several
                    .iter()
                    .map(|w| format!("{} ({})", w.obj.metadata.name.as_deref().unwrap_or("?"), w.at))
                    .collect();
                return Some(Err(vec![(
                    format!("{}.spec.hardwareRef", several[1].at),
                    format!(
                        "several Workflows name Hardware {hw:?}: {}; osie installs one plan: keep one",
                        names.join(", ")
                    ),
                )]));
            }
        };
        let spec = wf.obj.spec.as_ref()?;
        let tref = spec.template_ref.as_deref().unwrap_or_default();
        let Some(t) = self.templates.iter().find(|t| t.obj.metadata.name.as_deref() == Some(tref)) else {
            let known: Vec<&str> = self.templates.iter().filter_map(|t| t.obj.metadata.name.as_deref()).collect();
            return Some(Err(vec![(
                format!("{}.spec.templateRef", wf.at),
                format!(
                    "no Template {tref:?} in this file (it has: {}); list them together: kubectl get hardware,templates,workflows -o json",
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                ),
            )]));
        };
        let data = Data { disks: disks.to_vec(), map: spec.hardware_map.clone() };
        Some(convert(t, &data, macs))
    }
}

#[derive(Debug, Default, Deserialize)]
struct TemplateData {
    #[serde(default)]
    tasks: Vec<Task>,
}

#[derive(Debug, Default, Deserialize)]
struct Task {
    #[serde(default)]
    worker: String,
    #[serde(default)]
    actions: Vec<Action>,
}

#[derive(Debug, Default, Deserialize)]
struct Action {
    #[serde(default)]
    name: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    environment: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    command: Option<serde_norway::Value>,
}

/// The action's kind: the last path segment of its image without tag or digest
/// (`quay.io/tinkerbell/actions/image2disk:latest` → `image2disk`).
fn kind(image: &str) -> &str {
    let last = image.rsplit('/').next().unwrap_or(image);
    let last = last.split('@').next().unwrap_or(last);
    last.split(':').next().unwrap_or(last)
}

/// An environment value as the action's Go code reads it (a string).
fn scalar(v: &serde_norway::Value) -> Result<String, String> {
    use serde_norway::Value as V;
    match v {
        V::String(s) => Ok(s.clone()),
        V::Number(n) => Ok(n.to_string()),
        V::Bool(b) => Ok(b.to_string()),
        V::Null => Ok(String::new()),
        _ => Err("is not a string".into()),
    }
}

/// Go's `strconv.ParseBool`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" | "" => Some(false),
        _ => None,
    }
}

/// Options each action may have that osie maps (or that change nothing for it).
const IMAGE2DISK_ENV: &[&str] = &[
    "IMG_URL",
    "COMPRESSED",
    "DEST_DISK",
    "RETRY_ENABLED",
    "RETRY_DURATION_MINUTES",
    "PROGRESS_INTERVAL_SECONDS",
    "TEXT_LOGGING",
];
const WRITEFILE_ENV: &[&str] = &["DEST_DISK", "FS_TYPE", "DEST_PATH", "CONTENTS", "UID", "GID", "MODE", "DIRMODE"];
const CEXEC_ENV: &[&str] = &["BLOCK_DEVICE", "FS_TYPE", "CHROOT", "DEFAULT_INTERPRETER", "CMD_LINE"];
const KEXEC_ENV: &[&str] = &["BLOCK_DEVICE", "FS_TYPE"];
/// Filesystems the installer mounts.
const FILESYSTEMS: &[&str] = &["ext4", "xfs", "btrfs"];

fn convert(t: &Item<TemplateSpec>, data: &Data, macs: &[String]) -> Result<Planned, Vec<Refusal>> {
    let field = format!("{}.spec.data", t.at);
    let one = |what: String| Err(vec![(field.clone(), what)]);
    let Some(text) = t.obj.spec.as_ref().and_then(|s| s.data.as_deref()) else {
        return one("missing: the Template's YAML".into());
    };
    let rendered = match gotemplate::render(text, data) {
        Ok(r) => r,
        Err(e) => return one(format!("template expression {e}")),
    };
    let parsed: TemplateData = match serde_norway::from_str(&rendered) {
        Ok(p) => p,
        Err(e) => return one(format!("not a Tinkerbell template once its expressions are resolved: {e}")),
    };
    let task = match parsed.tasks.as_slice() {
        [t] => t,
        ts => return one(format!("{} tasks: osie installs one machine's one task", ts.len())),
    };
    if !task.worker.is_empty() && !macs.iter().any(|m| m.eq_ignore_ascii_case(task.worker.trim())) {
        return Err(vec![(
            field.clone(),
            format!("tasks[0].worker is {:?}, not a MAC of this Hardware ({})", task.worker, macs.join(", ")),
        )]);
    }
    let annotations = &t.obj.metadata.annotations;
    let mut b = Builder {
        field: &field,
        annotations,
        problems: Vec::new(),
        install: None,
        steps: Vec::new(),
        origins: Vec::new(),
        finish: None,
        image_seen: false,
    };
    for (i, a) in task.actions.iter().enumerate() {
        b.action(i, a);
    }
    if b.problems.is_empty() && b.install.is_none() {
        b.problems.push((field.clone(), "no image2disk action: nothing to write to the disk".into()));
    }
    match (b.problems.is_empty(), b.install) {
        (true, Some(mut install)) => {
            install.steps = b.steps;
            install.finish = b.finish.unwrap_or_default();
            Ok(Planned { install, origins: b.origins })
        }
        _ => Err(b.problems),
    }
}

struct Builder<'a> {
    field: &'a str,
    annotations: &'a BTreeMap<String, String>,
    problems: Vec<Refusal>,
    install: Option<Install>,
    steps: Vec<Step>,
    origins: Vec<(String, String)>,
    finish: Option<Finish>,
    /// An image2disk was met (refused or not): later actions are not reported as coming
    /// before it.
    image_seen: bool,
}

impl Builder<'_> {
    fn action(&mut self, i: usize, a: &Action) {
        let at = format!("tasks[0].actions[{i}] {:?} ({})", a.name, a.image);
        let mut env = BTreeMap::new();
        for (k, v) in &a.environment {
            match scalar(v) {
                Ok(s) => {
                    env.insert(k.as_str(), s);
                }
                Err(e) => return self.refuse(&at, format!("environment {k} {e}")),
            }
        }
        let k = kind(&a.image);
        let allowed = match k {
            "image2disk" => IMAGE2DISK_ENV,
            "writefile" => WRITEFILE_ENV,
            "cexec" => CEXEC_ENV,
            "kexec" => KEXEC_ENV,
            _ => {
                return self.refuse(
                    &at,
                    "osie cannot run this action: it runs image2disk, writefile, cexec and kexec natively, without containers"
                        .into(),
                )
            }
        };
        if a.command.is_some() {
            return self.refuse(&at, format!("command replaces the {k} action's own program: osie cannot run that"));
        }
        let unknown: Vec<&str> = env.keys().copied().filter(|k| !allowed.contains(k)).collect();
        if !unknown.is_empty() {
            return self.refuse(
                &at,
                format!(
                    "environment {} is not an option osie maps for {k} ({})",
                    unknown.join(", "),
                    allowed.join(", ")
                ),
            );
        }
        if self.finish.is_some() {
            return self.refuse(&at, "comes after kexec, which ends the install".into());
        }
        let src = format!("{} {}", self.field, at);
        let get = |name: &str| env.get(name).map(|s| s.trim()).filter(|s| !s.is_empty());
        match k {
            "image2disk" => {
                let first = !self.image_seen;
                self.image_seen = true;
                if !first {
                    return self.refuse(&at, "a second image2disk: osie writes one image".into());
                }
                if !self.steps.is_empty() {
                    return self.refuse(&at, "comes after a writefile or cexec: osie writes the image first".into());
                }
                let (Some(url), Some(disk)) = (get("IMG_URL"), get("DEST_DISK")) else {
                    return self.refuse(&at, "needs IMG_URL and DEST_DISK".into());
                };
                let given = get("COMPRESSED").unwrap_or("");
                let Some(compressed) = go_bool(given) else {
                    return self.refuse(&at, format!("COMPRESSED {given:?} is not true or false"));
                };
                let ann = |k: &str| self.annotations.get(k).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
                let tmpl = self.field.trim_end_matches(".spec.data");
                for (osie, name) in [
                    ("install.image.sha256", SHA256_ANNOTATION),
                    ("install.image.checksums_url", CHECKSUMS_ANNOTATION),
                    ("install.image.signature_url", SIGNATURE_ANNOTATION),
                ] {
                    if ann(name).is_some() {
                        self.origins.push((osie.into(), format!("{tmpl}.metadata.annotations[\"{name}\"]")));
                    }
                }
                for f in ["install", "install.image", "install.image.url", "install.image.format", "install.disk.path"]
                {
                    self.origins.push((f.into(), src.clone()));
                }
                self.install = Some(Install {
                    image: ImageRef {
                        name: None,
                        url: Some(url.to_string()),
                        sha256: ann(SHA256_ANNOTATION),
                        checksums_url: ann(CHECKSUMS_ANNOTATION),
                        signature_url: ann(SIGNATURE_ANNOTATION),
                        size: None,
                        raw_size: None,
                        format: if compressed { ImageFormat::Auto } else { ImageFormat::Raw },
                        checksum_of: Default::default(),
                    },
                    disk: DiskHints { path: Some(disk.to_string()), ..Default::default() },
                    gpt: Default::default(),
                    finish: Default::default(),
                    uefi: Default::default(),
                    steps: Vec::new(),
                });
            }
            "writefile" => {
                let Some(part) = self.partition(&at, get("DEST_DISK"), "DEST_DISK", get("FS_TYPE")) else { return };
                let Some(path) = get("DEST_PATH") else { return self.refuse(&at, "needs DEST_PATH".into()) };
                let mode = |name: &str, default: u32| -> Result<Mode, String> {
                    get(name).map_or(Ok(Mode(default)), Mode::parse).map_err(|e| format!("{name} {e}"))
                };
                let (m, d) = match (mode("MODE", 0o644), mode("DIRMODE", 0o755)) {
                    (Ok(m), Ok(d)) => (m, d),
                    (Err(e), _) | (_, Err(e)) => return self.refuse(&at, e),
                };
                let owner = format!("{}:{}", get("UID").unwrap_or("0"), get("GID").unwrap_or("0"));
                self.push_step(
                    &src,
                    Step {
                        name: Some(a.name.clone()).filter(|n| !n.is_empty()),
                        write_file: Some(WriteFile {
                            path: path.to_string(),
                            content: Some(env.get("CONTENTS").cloned().unwrap_or_default()),
                            content_base64: None,
                            mode: Some(m),
                            owner: Some(owner),
                            dir_mode: Some(d),
                        }),
                        partition: Some(part),
                        ..Default::default()
                    },
                );
            }
            "cexec" => {
                let Some(part) = self.partition(&at, get("BLOCK_DEVICE"), "BLOCK_DEVICE", get("FS_TYPE")) else {
                    return;
                };
                if get("CHROOT").is_none() {
                    return self.refuse(
                        &at,
                        "without CHROOT the command runs in the action's container: osie runs commands chrooted into the installed system only (CHROOT: y)".into(),
                    );
                }
                let Some(cmd) = env.get("CMD_LINE").filter(|c| !c.trim().is_empty()) else {
                    return self.refuse(&at, "needs CMD_LINE".into());
                };
                let timeout = a.timeout.unwrap_or(Run::DEFAULT_TIMEOUT_SECS).clamp(1, Run::MAX_TIMEOUT_SECS);
                let commands: Vec<Vec<String>> = match get("DEFAULT_INTERPRETER") {
                    Some(interp) => {
                        let mut c: Vec<String> = interp.split_whitespace().map(String::from).collect();
                        c.push(cmd.clone());
                        vec![c]
                    }
                    // cexec without an interpreter: each `;`-separated command split at spaces.
                    None => cmd
                        .split(';')
                        .map(|c| c.split_whitespace().map(String::from).collect::<Vec<_>>())
                        .filter(|c| !c.is_empty())
                        .collect(),
                };
                for command in commands {
                    self.push_step(
                        &src,
                        Step {
                            name: Some(a.name.clone()).filter(|n| !n.is_empty()),
                            run: Some(Run { command, timeout_secs: timeout, env: BTreeMap::new() }),
                            partition: Some(part),
                            ..Default::default()
                        },
                    );
                }
            }
            _ => {
                if !self.image_seen {
                    return self.refuse(&at, "comes before image2disk: there is nothing to kexec into yet".into());
                }
                self.origins.push(("install.finish".into(), src.clone()));
                self.finish = Some(Finish::Kexec);
            }
        }
    }

    /// The partition number of `dev` on the image2disk's disk, checked with its FS_TYPE.
    fn partition(&mut self, at: &str, dev: Option<&str>, name: &str, fs: Option<&str>) -> Option<u32> {
        let Some(disk) = self.install.as_ref().and_then(|i| i.disk.path.clone()) else {
            if !self.image_seen {
                self.refuse(at, "comes before image2disk: osie writes the image first".into());
            }
            // Else the image2disk was refused, and said why.
            return None;
        };
        let Some(dev) = dev else {
            self.refuse(at, format!("needs {name}"));
            return None;
        };
        let Some(n) = gotemplate::partition_of(&disk, dev) else {
            self.refuse(at, format!("{name} {dev} is not a partition of {disk}, the disk image2disk writes"));
            return None;
        };
        match fs {
            Some(f) if FILESYSTEMS.contains(&f) => Some(n),
            other => {
                self.refuse(
                    at,
                    format!("FS_TYPE {:?}: the installer mounts {}", other.unwrap_or_default(), FILESYSTEMS.join(", ")),
                );
                None
            }
        }
    }

    fn push_step(&mut self, src: &str, s: Step) {
        self.origins.push((format!("install.steps[{}]", self.steps.len()), src.to_string()));
        self.steps.push(s);
    }

    fn refuse(&mut self, at: &str, what: String) {
        self.problems.push((self.field.to_string(), format!("{at}: {what}")));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::inventory::source::Entry;
    use crate::problem::Problems;

    fn fixture() -> serde_json::Value {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tinkerbell/workflow-list.json");
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    }

    fn convert(v: serde_json::Value) -> (Vec<Entry>, Vec<String>) {
        let mut p = Problems::default();
        let e = crate::inventory::tinkerbell::parse(Path::new("tink.json"), v, &mut p);
        (e, p.iter().map(|p| format!("{}: {}", p.field, p.what)).collect())
    }

    /// The fixture with the Template's YAML edited.
    fn with_data(edit: impl Fn(&str) -> String) -> serde_json::Value {
        let mut v = fixture();
        let d = v["items"][1]["spec"]["data"].as_str().unwrap().to_string();
        v["items"][1]["spec"]["data"] = edit(&d).into();
        v
    }

    #[test]
    fn the_published_shape_becomes_the_install_plan() {
        let (e, p) = convert(fixture());
        assert!(p.is_empty(), "{p:#?}");
        assert_eq!(e.len(), 1, "Template and Workflow are no records");
        let m = &e[0].machine;
        let i = m.install.as_ref().expect("install plan");
        assert_eq!(i.image.url.as_deref(), Some("http://192.0.2.1:8080/images/debian-12.raw.gz"));
        assert_eq!(i.image.sha256.as_deref(), Some("5f0c1b6b2a0b0e6d3c1f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b"));
        assert_eq!(i.image.format, ImageFormat::Auto, "COMPRESSED: true");
        assert_eq!(i.disk.path.as_deref(), Some("/dev/sda"));
        assert_eq!(i.finish, Finish::Kexec);
        assert_eq!(i.steps.len(), 2);
        let w = i.steps[0].write_file.as_ref().unwrap();
        assert_eq!(i.steps[0].partition, Some(1));
        assert_eq!(i.steps[0].name.as_deref(), Some("write-netplan"));
        assert_eq!(w.path, "/etc/netplan/config.yaml");
        assert!(w.content.as_deref().unwrap().starts_with("network:\n  version: 2\n"), "{:?}", w.content);
        assert_eq!((w.mode, w.dir_mode, w.owner.as_deref()), (Some(Mode(0o644)), Some(Mode(0o755)), Some("0:0")));
        let r = i.steps[1].run.as_ref().unwrap();
        assert_eq!(r.command, ["/bin/sh", "-c", "useradd -s /bin/bash -d /home/tink/ -m -G sudo tink"]);
        assert_eq!((r.timeout_secs, i.steps[1].partition), (90, Some(1)));
        assert!(i.steps.iter().all(|s| s.check().is_empty()), "the steps pass the record's rules");
        // Problems in the plan name the Template's action.
        let src = &e[0].source;
        assert_eq!(
            src.field("install.steps[1].run.command"),
            "items[1].spec.data tasks[0].actions[2] \"create-user\" (quay.io/tinkerbell/actions/cexec:latest).run.command"
        );
        assert_eq!(src.field("install.image.sha256"), "items[1].metadata.annotations[\"osie/image-sha256\"]");
        assert_eq!(src.field("macs[0]"), "items[0].spec.interfaces[0].dhcp.mac");
    }

    #[test]
    fn actions_osie_cannot_run_are_refused_with_name_and_image() {
        let reboot = "\n      - name: \"reboot\"\n        image: ghcr.io/jacobweinstock/waitdaemon:latest\n        timeout: 90\n        command: [\"reboot\"]\n        environment:\n          IMAGE: alpine\n";
        let v = with_data(|d| {
            d.replace(
                "      - name: \"kexec-debian\"",
                &format!("{}\n      - name: \"kexec-debian\"", reboot.trim_end_matches('\n')),
            )
        });
        let (e, p) = convert(v);
        assert!(e.is_empty(), "the machine is not served a partial plan");
        assert_eq!(
            p,
            ["items[1].spec.data: tasks[0].actions[3] \"reboot\" (ghcr.io/jacobweinstock/waitdaemon:latest): osie cannot run this action: it runs image2disk, writefile, cexec and kexec natively, without containers"]
        );
    }

    #[test]
    fn options_and_expressions_osie_does_not_map_are_refused() {
        for (edit, want) in [
            (("CHROOT: y\n", "UPDATE_RESOLV_CONF: true\n          CHROOT: y\n"), "environment UPDATE_RESOLV_CONF is not an option osie maps for cexec"),
            (("          CHROOT: y\n", ""), "without CHROOT the command runs in the action's container"),
            (("DEST_PATH: /etc", "DEST_PATH: /etc/../etc"), ""),
            (("FS_TYPE: ext4\n          DEST_PATH", "FS_TYPE: vfat\n          DEST_PATH"), "FS_TYPE \"vfat\": the installer mounts ext4, xfs, btrfs"),
            (("DEST_DISK: {{ formatPartition ( index .Hardware.Disks 0 ) 1 }}\n          FS_TYPE: ext4\n          DEST_PATH", "DEST_DISK: /dev/sdb1\n          FS_TYPE: ext4\n          DEST_PATH"), "DEST_DISK /dev/sdb1 is not a partition of /dev/sda"),
            (("{{ index .Hardware.Disks 0 }}", "{{ index .Hardware.Disks 1 }}"), "template expression {{ index .Hardware.Disks 1 }}: index 1: the list has 1 entries"),
            (("{{.device_1}}", "{{.device_2}}"), "hardwareMap has no \"device_2\""),
            (("MODE: 0644", "MODE: rw"), "MODE \"rw\" is not a file mode"),
            (("COMPRESSED: true", "COMPRESSED: maybe"), "COMPRESSED \"maybe\" is not true or false"),
        ] {
            let (e, p) = convert(with_data(|d| {
                assert!(d.contains(edit.0), "{:?}", edit.0);
                d.replacen(edit.0, edit.1, 1)
            }));
            if want.is_empty() {
                // Not refused here: the record's own rules refuse it (validate, same field).
                let s = &e[0].machine.install.as_ref().unwrap().steps[0];
                assert!(!s.check().is_empty(), "{s:?}");
                continue;
            }
            assert!(e.is_empty() && p.len() == 1 && p[0].contains(want), "{want}: {p:#?}");
            assert!(p[0].starts_with("items[1].spec.data: "), "{p:?}");
        }
    }

    #[test]
    fn workflows_and_templates_must_match_up() {
        let mut v = fixture();
        v["items"][2]["spec"]["templateRef"] = "ubuntu".into();
        let (_, p) = convert(v);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with(
                "items[2].spec.templateRef: no Template \"ubuntu\" in this file (it has: debian-bookworm)"
            ),
            "{p:?}"
        );
        let mut v = fixture();
        let again = v["items"][2].clone();
        v["items"].as_array_mut().unwrap().push(again);
        let (_, p) = convert(v);
        assert!(p[0].contains("several Workflows name Hardware \"sm01\""), "{p:?}");
        let mut v = fixture();
        v["items"][0]["metadata"]["annotations"] = serde_json::json!({"osie/image": "debian-12"});
        let (_, p) = convert(v);
        assert!(p[0].contains("give the install plan one way"), "{p:?}");
        let mut v = fixture();
        v["items"][2]["spec"]["hardwareMap"]["device_1"] = "52:54:00:00:00:99".into();
        let (_, p) = convert(v);
        assert!(p[0].contains("tasks[0].worker is \"52:54:00:00:00:99\", not a MAC of this Hardware"), "{p:?}");
        // A Template alone in a file.
        let (_, p) = convert(fixture()["items"][1].clone());
        assert!(p[0].starts_with("kind: a Template on its own"), "{p:?}");
    }

    #[test]
    fn yaml_scalars_read_as_the_actions_read_them() {
        let v: BTreeMap<String, serde_norway::Value> =
            serde_norway::from_str("MODE: 0644\nB: true\nN: 0\nS: \"0755\"\nE:\nF: 1.5\n").unwrap();
        let got: Vec<String> = v.values().map(|x| scalar(x).unwrap()).collect();
        // B E F MODE N S
        assert_eq!(got[0], "true");
        assert_eq!(got[1], "");
        assert_eq!(Mode::parse(&got[3]), Ok(Mode(0o644)), "0644 is octal for chmod, whatever YAML made of it: {got:?}");
        assert_eq!(got[5], "0755");
        assert_eq!(kind("quay.io/tinkerbell-actions/image2disk:v1.0.0"), "image2disk");
        assert_eq!(kind("cexec:v1.0.0"), "cexec");
        assert_eq!(kind("ghcr.io/x/writefile@sha256:abcd"), "writefile");
    }
}
