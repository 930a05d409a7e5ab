//! The record's `install.steps` ([`osie_api::steps`]), run in order once the image is
//! written and the cloud-init seed is in place: each in the root filesystem of the target
//! disk (or the partition the step names), mounted once for the steps that share it and
//! unmounted at the end, also on error.
//!
//! - [`root`]: paths resolved beneath the installed root (`write_file`);
//! - [`chroot`]: a command chrooted into it with `/proc`, `/sys`, `/dev`, `/run` bound (`run`).
//!
//! Each step is a `step` event with what it did (a command's exit status and the end of its
//! output). A failing step ends the install with that in its error, unless it is marked
//! `continue_on_error`: then its event says it failed and the next step runs.

pub mod chroot;
pub mod root;

use anyhow::{bail, Context, Result};
use osie_api::steps::{Action, Owner, Step};
use osie_api::Phase;

use crate::cloudinit::Mounted;
use crate::report::Reporter;
use crate::target::Target;

/// Check every step (the rules bootsvc's `check` applies), before anything is mounted.
pub fn check(steps: &[Step]) -> Result<()> {
    let mut problems = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        for (f, w) in s.check() {
            let at = if f.is_empty() { format!("install.steps[{i}]") } else { format!("install.steps[{i}].{f}") };
            problems.push(format!("{at}: {w}"));
        }
    }
    if !problems.is_empty() {
        bail!("the metadata's steps are not valid: {}", problems.join("; "));
    }
    Ok(())
}

/// One filesystem of the disk, mounted for the steps, with the binds once a `run` needs them.
struct Open {
    want: Option<u32>,
    mounted: Mounted,
    root: root::Root,
    binds: Option<chroot::Binds>,
}

impl Open {
    fn new(t: &Target, want: Option<u32>) -> Result<Open> {
        let mounted = match want {
            None => Mounted::root(t).context("mounting the root filesystem for the steps")?,
            Some(n) => Mounted::partition(t, n).with_context(|| format!("mounting partition {n} for the steps"))?,
        };
        let root = root::Root::open(&mounted.mnt.dir)?;
        Ok(Open { want, mounted, root, binds: None })
    }

    fn close(self) -> Result<()> {
        drop(self.binds);
        drop(self.root);
        self.mounted.unmount()
    }

    fn what(&self) -> String {
        format!("partition {} ({})", self.mounted.partition, self.mounted.fs.kernel_name())
    }
}

/// Run `steps` on the installed disk `t`, reporting each.
pub fn run_all(t: &Target, steps: &[Step], reporter: &Reporter) -> Result<()> {
    check(steps)?;
    let mut open: Option<Open> = None;
    let n = steps.len();
    for (i, s) in steps.iter().enumerate() {
        let label = format!("step {}/{n} ({})", i + 1, s.describe());
        if open.as_ref().is_some_and(|o| o.want != s.partition) {
            if let Some(o) = open.take() {
                o.close()?;
            }
        }
        let o = match open.as_mut() {
            Some(o) => o,
            None => open.insert(Open::new(t, s.partition).with_context(|| label.clone())?),
        };
        match one(o, s, &label) {
            Ok(msg) => reporter.event(Phase::Step, format!("{label}: {msg}")),
            Err(e) if s.continue_on_error => {
                tracing::warn!("{label} failed, continuing (continue_on_error): {e:#}");
                reporter.event(Phase::Step, format!("{label}: failed, continuing (continue_on_error): {e:#}"));
            }
            Err(e) => return Err(e.context(label)),
        }
    }
    if let Some(o) = open {
        o.close()?;
    }
    Ok(())
}

/// One step in the mounted filesystem; what it did.
fn one(o: &mut Open, s: &Step, label: &str) -> Result<String> {
    let on = o.what();
    match s.action().map_err(anyhow::Error::msg)? {
        Action::WriteFile(w) => {
            let bytes = w.bytes().map_err(anyhow::Error::msg)?;
            let owner = Owner::parse(w.owner.as_deref().unwrap_or("0:0")).map_err(anyhow::Error::msg)?;
            let done = o.root.write_file(&w.path, &bytes, w.mode().0, &owner, w.dir_mode().0)?;
            let made = if done.made.is_empty() { String::new() } else { format!("; made {}", done.made.join(", ")) };
            Ok(format!(
                "wrote {} ({} bytes, mode {}, owner {}:{}) on {on}{made}",
                w.path,
                done.bytes,
                w.mode(),
                done.uid,
                done.gid
            ))
        }
        Action::Run(r) => {
            if o.binds.is_none() {
                o.binds = Some(chroot::Binds::new(&o.root, &o.mounted.mnt.dir)?);
            }
            let out = chroot::run(&o.mounted.mnt.dir, r, label)?;
            let output = if out.tail.is_empty() { "no output".to_string() } else { format!("output: {}", out.tail) };
            let what = format!("{} in {:.1} s on {on}; {output}", out.describe(), out.elapsed.as_secs_f64());
            if out.success() {
                Ok(what)
            } else {
                bail!("{}: {what}", r.command.join(" "))
            }
        }
    }
}
