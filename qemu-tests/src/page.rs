//! The status page (`/ui/`) watched in a real browser while a machine installs: headless
//! Chromium in the lab's namespace (`osie_testkit::browser`), logged in with the lab's admin
//! token, on the machine's page from before it boots until [`PageWatch::finish`].
//!
//! On its own thread it samples what the page shows (phase and progress bar, read from the
//! DOM) every [`SAMPLE`], on one page load (a marker set in the page must survive: a reload
//! would lose it), and keeps a screenshot taken while the image streams. [`PageWatch::finish`]
//! then checks the progress bar reached 100 % and the machine's timeline on the page holds
//! every phase bootsvc stored, and writes the screenshots to
//! `qemu-tests/artifacts/status-page/`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use osie_api::Phase;
use osie_testkit::browser::Browser;
use osie_testkit::workspace_root;

use crate::lab::Lab;

/// How often the page is read.
pub const SAMPLE: Duration = Duration::from_millis(300);
const UI: &str = "http://127.0.0.1:8081/ui/";

/// What the page showed at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub at: Duration,
    pub phase: String,
    pub progress: f64,
}

/// What the sampling thread gives back: the browser, the samples, a screenshot taken while
/// the image streamed.
type Sampled = (Browser, Vec<Sample>, Option<Vec<u8>>);

/// The browser on its thread, until [`PageWatch::finish`].
pub struct PageWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Sampled>>>,
    mac: String,
}

/// Where the screenshots go.
pub fn artifacts() -> PathBuf {
    workspace_root().join("qemu-tests/artifacts/status-page")
}

impl PageWatch {
    /// Log in and open the machine's page (the machine must be in the inventory).
    pub fn start(lab: &Lab, mac: &str) -> Result<PageWatch> {
        let token = lab.site.settings().admin.context("the lab has no admin token")?.token;
        let mut b = Browser::launch(&lab.site.ns, 1100, 780)?;
        b.goto(&format!("{UI}login"))?;
        b.eval(&format!("document.getElementById('token').value = '{token}'; document.forms[0].submit(); true"))?;
        b.wait_until(
            "the machine in the list",
            Duration::from_secs(20),
            &format!("document.querySelector('tr[data-mac=\"{mac}\"]') !== null"),
        )
        .context("the machine never appeared on the status page")?;
        b.eval(&format!("window.osieMarker = 'one load'; location.hash = '#/m/{mac}'; true"))?;
        b.wait_until("the machine's page", Duration::from_secs(20), "document.querySelector('#progress') !== null")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || sample(b, &flag));
        Ok(PageWatch { stop, thread: Some(thread), mac: mac.to_string() })
    }

    /// Stop sampling; check what the page showed: the progress went forward on one page load,
    /// through the image stream, to 100 %; the timeline holds every phase of `phases` (what
    /// bootsvc stored for the run, up to `installed`). The samples and where the screenshots
    /// are.
    pub fn finish(mut self, phases: &[Phase]) -> Result<(Vec<Sample>, Vec<PathBuf>)> {
        self.stop.store(true, Ordering::SeqCst);
        let (mut b, samples, during) = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r?,
            _ => bail!("the status page's watcher stopped"),
        };
        let dir = artifacts();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut shots = Vec::new();
        if let Some(png) = during {
            let p = dir.join("during-install.png");
            std::fs::write(&p, png).with_context(|| format!("writing {}", p.display()))?;
            shots.push(p);
        }
        ensure!(phases.contains(&Phase::Installed), "no installed event stored: {phases:?}");
        let want = serde_json::to_string(&phases.iter().map(|p| p.as_str()).collect::<Vec<_>>())?;
        let on_page = b.wait_until(
            "every phase bootsvc stored on the page's timeline",
            Duration::from_secs(20),
            &format!(
                "(() => {{ const got = [...document.querySelectorAll('#phases [data-phase]')].map(e => e.dataset.phase);
                   return {want}.every(p => got.includes(p)) ? got : null; }})()"
            ),
        );
        // The sampler stopped when the harness saw `installed`; the page follows within the
        // watcher's poke or rescan.
        let full = b.wait_until(
            "the progress bar at 100 %",
            Duration::from_secs(10),
            "Number(document.querySelector('#progress')?.value) === 100",
        );
        let p = dir.join("installed.png");
        b.screenshot(&p)?;
        shots.push(p);
        let on_page = on_page?;
        full?;
        ensure!(
            b.eval("window.osieMarker")? == "one load",
            "the page was reloaded (its marker is gone): the updates must come without a reload"
        );
        b.eval("location.hash = '#/'; true")?;
        b.wait_until(
            "the list",
            Duration::from_secs(10),
            &format!("document.querySelector('tr[data-mac=\"{}\"]')", self.mac),
        )?;
        let p = dir.join("list.png");
        b.screenshot(&p)?;
        shots.push(p);
        check(&samples)?;
        eprintln!("status page: timeline {on_page}; {} samples; screenshots in {}", samples.len(), dir.display());
        Ok((samples, shots))
    }
}

impl Drop for PageWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sample(mut b: Browser, stop: &AtomicBool) -> Result<Sampled> {
    let start = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut during = None;
    while !stop.load(Ordering::SeqCst) {
        let v = b.eval(
            "[document.querySelector('#phase')?.textContent ?? '', Number(document.querySelector('#progress')?.value ?? -1),
              window.osieMarker ?? '']",
        )?;
        let phase = v[0].as_str().unwrap_or("").to_string();
        let progress = v[1].as_f64().unwrap_or(-1.0);
        if v[2] != "one load" {
            bail!("the page was reloaded during the install (after {:?})", start.elapsed());
        }
        let s = Sample { at: start.elapsed(), phase, progress };
        if samples.last().is_none_or(|l| l.phase != s.phase || l.progress != s.progress) {
            samples.push(s.clone());
        }
        // Image-streaming spans 55–67 % of the bar: past 60, most of the image is written.
        if during.is_none() && s.phase == "image-streaming" && (60.0..67.0).contains(&s.progress) {
            let tmp = std::env::temp_dir().join(format!("osie-page-{}.png", std::process::id()));
            b.screenshot(&tmp)?;
            during = std::fs::read(&tmp).ok();
            let _ = std::fs::remove_file(&tmp);
        }
        std::thread::sleep(SAMPLE);
    }
    Ok((b, samples, during))
}

/// The page's progress never went back within the run, and moved while the image streamed.
pub fn check(samples: &[Sample]) -> Result<()> {
    let shown: Vec<String> =
        samples.iter().map(|s| format!("{:.0}s {} {}%", s.at.as_secs_f64(), s.phase, s.progress)).collect();
    let streaming: Vec<f64> = samples.iter().filter(|s| s.phase == "image-streaming").map(|s| s.progress).collect();
    let first = streaming.first().with_context(|| format!("the page never showed the image streaming: {shown:?}"))?;
    ensure!(streaming.iter().any(|p| p > first), "the progress bar did not move while the image streamed: {shown:?}");
    ensure!(samples.windows(2).all(|w| w[1].progress >= w[0].progress), "the progress bar went back: {shown:?}");
    Ok(())
}
