//! Several bootsvc instances of one site (`osie.url=http://a:8080,http://b:8080`): which one
//! the installer talks to, and when it moves on to the next.
//!
//! Metadata, events and the image share one [`Servers`]: the instance in use is the same for
//! all three, and stays in use while it answers (no going back to the first). A request that
//! fails with a connection error (refused, reset, timed out, cut short) or a 5xx, 408 or 429
//! moves everyone to the next instance, wrapping around after the last; a 4xx such as 403 or
//! 404 is an answer, and no other instance is asked. The decision is pure ([`Tries`]): within
//! one round every instance is tried at once, the back-off waits only after a whole round
//! failed, and the give-up error names every instance and why it failed. With one URL this is
//! exactly the retry with back-off it was before.
//!
//! The image URL the metadata names is served by every instance when it starts with one of
//! the bases: [`Servers::for_url`] gives the same path on each of them, following the same
//! instance in use. Each move is logged and kept as a note ([`Servers::take_notes`]) that the
//! next event carries to bootsvc.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::backoff::Backoff;

/// The bootsvc base URLs (or, through [`Servers::for_url`], one file on each of them) and the
/// one in use, shared by every clone and view.
#[derive(Debug, Clone)]
pub struct Servers {
    urls: Arc<[String]>,
    shared: Arc<Mutex<Shared>>,
}

#[derive(Debug)]
struct Shared {
    current: usize,
    /// The bases, for notes and logs (a view's URLs are files on them).
    bases: Arc<[String]>,
    notes: Vec<String>,
}

/// How one attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// The server answered (a 4xx, a document that does not parse, an untrusted
    /// certificate): asking again or elsewhere would not change it.
    Answer(anyhow::Error),
    /// The server could not be reached or could not answer (connection refused, reset or
    /// timed out, 5xx, 408, 429): the next one is tried.
    Unreachable(anyhow::Error),
}

impl Servers {
    /// `urls` in order of preference; at least one.
    pub fn new(urls: Vec<String>) -> Result<Servers> {
        if urls.is_empty() {
            return Err(anyhow!("no bootsvc URL given"));
        }
        let urls: Arc<[String]> = urls.into();
        let shared = Shared { current: 0, bases: urls.clone(), notes: Vec::new() };
        Ok(Servers { urls, shared: Arc::new(Mutex::new(shared)) })
    }

    /// A comma-separated list, as `osie.url` takes it (and `--metadata-url`).
    pub fn parse(list: &str) -> Result<Servers> {
        Servers::new(osie_api::cmdline::parse_urls(list)?)
    }

    /// One URL on its own (an image on a server that is not bootsvc).
    pub fn single(url: &str) -> Servers {
        let urls: Arc<[String]> = vec![url.to_string()].into();
        let shared = Shared { current: 0, bases: urls.clone(), notes: Vec::new() };
        Servers { urls, shared: Arc::new(Mutex::new(shared)) }
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The URL in use and its place in the list.
    pub fn current(&self) -> (usize, String) {
        let i = self.lock().current % self.urls.len();
        (i, self.urls[i].clone())
    }

    /// The file `url` on every server, following the same server in use, when it lies under
    /// one of the bases (`{base}/images/x` → `{each base}/images/x`); else `url` alone.
    pub fn for_url(&self, url: &str) -> Servers {
        match mirrors(&self.urls, url) {
            Some(urls) => Servers { urls: urls.into(), shared: self.shared.clone() },
            None => Servers::single(url),
        }
    }

    /// `url` moved onto the server in use when it is one of the bases or lies under one
    /// (the longest that fits); else `url` as it is. What the installed OS is told to call
    /// (its metadata and phone-home URLs) must name the instance in use when the seed is
    /// written: after a failover, the one the metadata came from may be gone.
    pub fn on_current(&self, url: &str) -> String {
        let s = self.lock();
        let path = s
            .bases
            .iter()
            .filter_map(|b| url.strip_prefix(b.as_str()).filter(|p| p.is_empty() || p.starts_with('/')))
            .min_by_key(|p| p.len());
        match path {
            Some(path) => format!("{}{path}", s.bases[s.current % s.bases.len()]),
            None => url.to_string(),
        }
    }

    /// Attempt `i` failed with `why`: when `i` is still the one in use, move everyone to the
    /// next (another thread may have moved already). Logged, and kept as a note for the
    /// next event.
    pub fn failed(&self, i: usize, why: &str) {
        let n = self.urls.len();
        if n < 2 {
            return;
        }
        let mut s = self.lock();
        if s.current % n != i {
            return;
        }
        s.current = (i + 1) % n;
        let (from, to) = (&s.bases[i], &s.bases[s.current]);
        tracing::warn!("bootsvc {from} failed ({why}); going on with {to}");
        let note = format!("failover: {from} failed ({why}), now {to}");
        s.notes.push(note);
    }

    /// The moves since the last call, oldest first.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().notes)
    }

    /// Run `attempt` on the server in use until it succeeds, it gets an answer that is an
    /// error ([`Failure::Answer`], returned as is), or every server failed `backoff.tries`
    /// times in a row. `what` names the operation in logs and errors.
    pub fn run<T>(
        &self,
        what: &str,
        backoff: Backoff,
        mut attempt: impl FnMut(&str) -> Result<T, Failure>,
    ) -> Result<T> {
        let mut tries = Tries::new(self.urls.len(), backoff);
        loop {
            let (i, url) = self.current();
            match attempt(&url) {
                Ok(v) => return Ok(v),
                Err(Failure::Answer(e)) => return Err(e),
                Err(Failure::Unreachable(e)) => {
                    let why = format!("{e:#}");
                    self.failed(i, &why);
                    match tries.failed(i, why) {
                        Some(wait) => {
                            if !wait.is_zero() {
                                tracing::warn!("{what}: {}; trying again in {wait:?}", tries.last_round(&self.urls));
                                std::thread::sleep(wait);
                            }
                        }
                        None if self.urls.len() == 1 => return Err(e),
                        None => return Err(anyhow!("{}", tries.give_up(&self.urls))),
                    }
                }
            }
        }
    }
}

/// `url` under one of `bases` (the longest that fits) → the same path under each base, in
/// order.
pub fn mirrors(bases: &[String], url: &str) -> Option<Vec<String>> {
    let path = bases
        .iter()
        .filter_map(|b| url.strip_prefix(b.as_str()).filter(|p| p.starts_with('/')))
        .min_by_key(|p| p.len())?;
    Some(bases.iter().map(|b| format!("{b}{path}")).collect())
}

/// The failover decision for one operation over `n` servers: after each failure, go on at
/// once with the next server while this round has servers left, wait the back-off's delay
/// after a whole round failed, and give up after `backoff.tries` rounds. Pure: the caller
/// sleeps.
#[derive(Debug, Clone)]
pub struct Tries {
    n: usize,
    backoff: Backoff,
    /// Failures in a row (reset by progress).
    failures: u32,
    /// The last error per server.
    why: Vec<Option<String>>,
}

impl Tries {
    pub fn new(n: usize, backoff: Backoff) -> Tries {
        Tries { n: n.max(1), backoff, failures: 0, why: vec![None; n.max(1)] }
    }

    /// Server `i` failed with `why`: how long to wait before the next attempt (zero: at
    /// once, on the next server), or `None` to give up.
    pub fn failed(&mut self, i: usize, why: String) -> Option<Duration> {
        if let Some(w) = self.why.get_mut(i) {
            *w = Some(why);
        }
        self.failures += 1;
        if !self.failures.is_multiple_of(self.n as u32) {
            return Some(Duration::ZERO);
        }
        let rounds = self.failures / self.n as u32;
        (rounds < self.backoff.tries).then(|| self.backoff.delay(rounds))
    }

    /// Progress was made (bytes arrived): the count starts again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Each server and why it last failed: `http://a: why; http://b: why`.
    pub fn last_round(&self, urls: &[String]) -> String {
        let each = urls.iter().zip(&self.why).map(|(u, w)| format!("{u}: {}", w.as_deref().unwrap_or("not tried")));
        each.collect::<Vec<_>>().join("; ")
    }

    /// The give-up error's text.
    pub fn give_up(&self, urls: &[String]) -> String {
        format!(
            "all {} servers failed, {} tries each: {}",
            self.n,
            self.failures / self.n as u32,
            self.last_round(urls)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const FAST: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2), 3);

    #[test]
    fn a_round_goes_on_at_once_and_waits_after_the_last() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 3);
        let mut t = Tries::new(3, b);
        let waits: Vec<_> = (0..9).map(|k| t.failed(k % 3, format!("e{k}"))).collect();
        let z = Some(Duration::ZERO);
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(waits, [z, z, ms(100), z, z, ms(200), z, z, None]);
        assert_eq!(
            t.give_up(&urls(&["http://a", "http://b", "http://c"])),
            "all 3 servers failed, 3 tries each: http://a: e6; http://b: e7; http://c: e8"
        );
        // One server: the back-off as before, every failure a round.
        let mut t = Tries::new(1, b);
        assert_eq!(
            [t.failed(0, "x".into()), t.failed(0, "x".into()), t.failed(0, "x".into())],
            [ms(100), ms(200), None]
        );
        t.reset();
        assert_eq!(t.failed(0, "x".into()), ms(100), "progress starts the count again");
    }

    #[test]
    fn the_server_in_use_moves_on_and_wraps_around() {
        let s = Servers::new(urls(&["http://a", "http://b", "http://c"])).unwrap();
        assert_eq!(s.current(), (0, "http://a".into()));
        s.failed(0, "refused");
        assert_eq!(s.current().0, 1);
        // A second user that saw the first server fail too does not skip the second.
        s.failed(0, "refused");
        assert_eq!(s.current().0, 1);
        s.failed(1, "503");
        s.failed(2, "reset");
        assert_eq!(s.current(), (0, "http://a".into()), "after the last, the first again");
        let notes = s.take_notes();
        assert_eq!(notes.len(), 3);
        assert_eq!(notes[0], "failover: http://a failed (refused), now http://b");
        assert_eq!(notes[2], "failover: http://c failed (reset), now http://a");
        assert!(s.take_notes().is_empty(), "each note is taken once");
        let one = Servers::single("http://x/i.raw");
        one.failed(0, "refused");
        assert!(one.take_notes().is_empty(), "one server: nowhere to go");
    }

    #[test]
    fn files_on_the_bases_follow_the_server_in_use() {
        let s = Servers::new(urls(&["http://192.0.2.1:8080", "http://192.0.2.2:8080"])).unwrap();
        let img = s.for_url("http://192.0.2.1:8080/images/d.raw.zst");
        assert_eq!(img.urls(), ["http://192.0.2.1:8080/images/d.raw.zst", "http://192.0.2.2:8080/images/d.raw.zst"]);
        // Found under the second base too, and moving one moves the other.
        let img = s.for_url("http://192.0.2.2:8080/images/d.raw.zst");
        img.failed(0, "reset");
        assert_eq!(s.current().0, 1);
        assert_eq!(img.current().1, "http://192.0.2.2:8080/images/d.raw.zst");
        assert_eq!(s.take_notes(), ["failover: http://192.0.2.1:8080 failed (reset), now http://192.0.2.2:8080"]);
        // Bases with paths: the longest base that fits names the path.
        let bases = urls(&["http://a", "http://a/osie"]);
        assert_eq!(mirrors(&bases, "http://a/osie/images/d").unwrap(), ["http://a/images/d", "http://a/osie/images/d"]);
        // Elsewhere, or only a prefix of a host name: that URL alone.

        for other in ["http://198.51.100.7/d.raw.zst", "http://192.0.2.1:80801/images/d", "http://192.0.2.1:8080"] {
            assert_eq!(s.for_url(other).urls(), [other], "{other}");
        }
    }

    #[test]
    fn urls_for_the_installed_os_name_the_server_in_use() {
        let s = Servers::new(urls(&["http://192.0.2.1:8080", "http://192.0.2.2:8080"])).unwrap();
        let phone = "http://192.0.2.1:8080/phone-home/i-1";
        assert_eq!(s.on_current(phone), phone, "no failover: as bootsvc gave it");
        s.failed(0, "reset");
        assert_eq!(s.on_current(phone), "http://192.0.2.2:8080/phone-home/i-1");
        // The base itself (bootsvc's metadata_base_url), with or without a slash.
        assert_eq!(s.on_current("http://192.0.2.1:8080"), "http://192.0.2.2:8080");
        assert_eq!(s.on_current("http://192.0.2.1:8080/"), "http://192.0.2.2:8080/");
        // A view for one file moves the same way (the instance in use is shared).
        s.for_url("http://192.0.2.2:8080/images/d").failed(1, "refused");
        assert_eq!(s.on_current("http://192.0.2.2:8080/m"), "http://192.0.2.1:8080/m");
        // Elsewhere, or only a prefix of a host name: unchanged.
        for other in ["http://198.51.100.7/phone-home", "http://192.0.2.1:80801/phone-home"] {
            assert_eq!(s.on_current(other), other);
        }
    }

    #[test]
    fn run_moves_on_for_unreachable_and_stops_on_answers() {
        let s = Servers::new(urls(&["http://a", "http://b"])).unwrap();
        let mut asked = Vec::new();
        let r = s.run("GET /metadata", FAST, |u| {
            asked.push(u.to_string());
            if u == "http://a" {
                Err(Failure::Unreachable(anyhow!("connection refused")))
            } else {
                Ok(u.to_string())
            }
        });
        assert_eq!(r.unwrap(), "http://b");
        assert_eq!(asked, ["http://a", "http://b"]);
        // b stays in use.
        let r = s.run("x", FAST, |u| Ok::<_, Failure>(u.to_string()));
        assert_eq!(r.unwrap(), "http://b");
        // A 404 is an answer: a is not asked.
        asked.clear();
        let r: Result<()> = s.run("x", FAST, |u| {
            asked.push(u.to_string());
            Err(Failure::Answer(anyhow!("server answered 404 Not Found")))
        });
        assert!(r.unwrap_err().to_string().contains("404"));
        assert_eq!(asked, ["http://b"]);
        // All unreachable: every server tried `tries` times, in turn, each named.
        asked.clear();
        let r: Result<()> = s.run("x", FAST, |u| {
            asked.push(u.to_string());
            Err(Failure::Unreachable(anyhow!("{} refused", &u[7..])))
        });
        let e = r.unwrap_err().to_string();
        assert_eq!(asked, ["http://b", "http://a", "http://b", "http://a", "http://b", "http://a"]);
        assert_eq!(e, "all 2 servers failed, 3 tries each: http://a: a refused; http://b: b refused");
        // One server: its own last error, as before.
        let one = Servers::single("http://a");
        let r: Result<()> = one.run("x", FAST, |_| Err(Failure::Unreachable(anyhow!("refused"))));
        assert_eq!(r.unwrap_err().to_string(), "refused");
    }
}
