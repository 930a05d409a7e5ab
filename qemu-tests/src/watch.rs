//! Waiting for a machine to reach a phase, watching what an operator would: bootsvc's log
//! and its stored events (through the admin API), and the serial console.
//!
//! A wait that does not end well says which phase never came, the last phase that did (and
//! when), where the console stopped, and where the logs are kept; the lab is marked failed
//! so they are. A wait also ends early when QEMU or bootsvc dies, when the installer reports
//! `failed` and that was not expected, or when the user presses Ctrl-C.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Result};
use bootsvc::state::StoredEvent;
use osie_api::Phase;

use crate::clock::fmt_offset;
use crate::console;
use crate::lab::Lab;
use crate::machine::Machine;
use crate::signals;
use crate::timeline::{ConsoleMark, Timeline, Who};

/// How often sources are read again.
const POLL: Duration = Duration::from_millis(500);

/// A callback given the timeline after each refresh.
type Progress<'a> = Box<dyn FnMut(&Timeline) + 'a>;

pub struct Watch<'a> {
    pub lab: &'a Lab,
    pub machine: &'a mut Machine,
    who: Who,
    needles: Vec<(String, String)>,
    console_marks: Vec<ConsoleMark>,
    events: Vec<StoredEvent>,
    timeline: Timeline,
    /// A `failed` event is what the scenario waits for (else it ends any wait at once).
    pub expect_failure: bool,
    /// Called with the timeline after every refresh (the demo prints progress with it).
    on_refresh: Option<Progress<'a>>,
}

impl<'a> Watch<'a> {
    pub fn new(lab: &'a Lab, machine: &'a mut Machine, who: Who) -> Watch<'a> {
        let timeline = Timeline::build(machine.powered_on, &who, &[], &[], &[]);
        Watch {
            lab,
            machine,
            who,
            needles: Vec::new(),
            console_marks: Vec::new(),
            events: Vec::new(),
            timeline,
            expect_failure: false,
            on_refresh: None,
        }
    }

    /// Call `f` with the timeline after every refresh.
    pub fn on_refresh(&mut self, f: impl FnMut(&Timeline) + 'a) {
        self.on_refresh = Some(Box::new(f));
    }

    /// Put a mark labelled `label` on the timeline when `needle` first shows on the console.
    pub fn watch_console(&mut self, label: &str, needle: &str) {
        self.needles.push((label.to_string(), needle.to_string()));
    }

    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    pub fn events(&self) -> &[StoredEvent] {
        &self.events
    }

    /// Read every source again and rebuild the timeline.
    pub fn refresh(&mut self) -> Result<()> {
        self.lab.check_bootsvc().map_err(|e| anyhow!("bootsvc died: {e:#}"))?;
        self.machine.check_running().map_err(|e| anyhow!("the machine's QEMU exited: {e:#}"))?;
        // The admin API is read through the CLI; a hiccup keeps the last answer.
        if let Ok(ev) = self.lab.events(&self.who.mac) {
            self.events = ev;
        }
        let text = self.machine.console();
        let now = SystemTime::now();
        for (label, needle) in &self.needles {
            if !self.console_marks.iter().any(|m| &m.label == label) {
                if let Some(line) = text.lines().find(|l| l.contains(needle.as_str())) {
                    self.console_marks.push(ConsoleMark { time: now, label: label.clone(), line: line.trim().into() });
                }
            }
        }
        self.timeline = Timeline::build(
            self.machine.powered_on,
            &self.who,
            &self.lab.log_entries(),
            &self.events,
            &self.console_marks,
        );
        if let Some(f) = self.on_refresh.as_mut() {
            f(&self.timeline);
        }
        Ok(())
    }

    /// Wait until `done` holds for the timeline, at most `limit`. `what` names the phase in
    /// the error.
    pub fn until(&mut self, what: &str, limit: Duration, done: impl Fn(&Timeline) -> bool) -> Result<&Timeline> {
        let start = Instant::now();
        loop {
            // Before reading anything: a stop request explains whatever else went wrong.
            if signals::requested() {
                return Err(self.fail(what, "interrupted"));
            }
            if let Err(e) = self.refresh() {
                return Err(self.fail(what, &format!("{e:#}")));
            }
            if done(&self.timeline) {
                return Ok(&self.timeline);
            }
            if !self.expect_failure {
                if let Some(f) = self.timeline.event(Phase::Failed) {
                    let why = format!("the installer reported failed: {}", f.detail);
                    return Err(self.fail(what, &why));
                }
            }
            if start.elapsed() > limit {
                return Err(self.fail(what, &format!("not within {} s", limit.as_secs())));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Wait for the first event of `phase`.
    pub fn phase(&mut self, phase: Phase, limit: Duration) -> Result<&Timeline> {
        self.until(&format!("event {phase}"), limit, move |t| t.event(phase).is_some())
    }

    /// The error for a phase that did not come, with everything needed to see why; marks the
    /// lab failed so its logs are kept, and writes the timeline beside them.
    pub fn fail(&self, what: &str, why: &str) -> anyhow::Error {
        self.lab.failed();
        let last = self.timeline.last();
        let text = self.machine.console();
        let milestone = console::last_milestone(&text).unwrap_or_else(|| "(nothing recognisable)".into());
        let timeline = self.timeline.render();
        let _ = std::fs::write(self.machine.dir.join("timeline.txt"), &timeline);
        anyhow!(
            "{scenario} ({name}, {fw}): {what} never came: {why}\n\
             last phase seen: {at} {label} {detail}\n\
             console's last milestone: {milestone}\n\
             console's last lines:\n{tail}\n\
             timeline so far:\n{timeline}\
             logs kept in {kept}",
            scenario = self.lab.scenario,
            name = self.machine.spec.name,
            fw = self.machine.spec.firmware.describe(),
            at = fmt_offset(last.at),
            label = last.label,
            detail = last.detail,
            tail = indent(&console::tail(&text, 15)),
            kept = self.lab.kept_dir().display(),
        )
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    | {l}")).collect::<Vec<_>>().join("\n")
}
