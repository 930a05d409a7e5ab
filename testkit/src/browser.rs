//! A real browser for the status page's tests: headless Chromium (Debian's `chromium`)
//! started inside a namespace and driven through its DevTools protocol over a pipe
//! (`--remote-debugging-pipe`: the commands go in on its fd 3, answers and events come out
//! on fd 4, each message JSON ended by a NUL byte), so nothing listens on a port and the
//! browser reaches only what the namespace reaches.
//!
//! One page per browser: [`Browser::goto`], [`Browser::eval`] (a JavaScript expression, its
//! value as JSON; promises awaited), [`Browser::wait_until`] (an expression polled until it
//! is truthy), [`Browser::screenshot`] (PNG), [`Browser::set_cookie`].

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{ChildGuard, Netns};

/// How long one DevTools command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The Chromium binary: Debian's real one (its `/usr/bin/chromium` is a shell wrapper).
pub fn chromium() -> Option<PathBuf> {
    let real = PathBuf::from("/usr/lib/chromium/chromium");
    if real.is_file() {
        return Some(real);
    }
    crate::which("chromium")
}

pub struct Browser {
    // Field order: the pipe closes before the process is killed.
    to: std::fs::File,
    from: mpsc::Receiver<Value>,
    next: u64,
    session: String,
    _child: ChildGuard,
    _profile: tempfile::TempDir,
    /// Chromium's stderr, for errors.
    log: PathBuf,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both descriptors were just made and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Browser {
    /// Chromium in `ns` (a `width`×`height` window), with a blank page attached. `None`
    /// when Chromium is not installed (the caller skips with `require_tools`).
    pub fn launch(ns: &Netns, width: u32, height: u32) -> Result<Browser> {
        let bin = chromium().context("chromium is not installed (scripts/setup installs it)")?;
        let profile = tempfile::Builder::new().prefix("osie-chromium-").tempdir().context("a browser profile")?;
        let log = profile.path().join("chromium.log");
        let err = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // fd 3: commands into the browser; fd 4: its answers.
        let (cmd_r, cmd_w) = pipe()?;
        let (ans_r, ans_w) = pipe()?;
        let (cr, aw) = (cmd_r.as_raw_fd(), ans_w.as_raw_fd());
        let mut cmd = ns.cmd(&bin);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--mute-audio",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .stdout(Stdio::null())
        .stderr(err);
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 gives the copies without O_CLOEXEC: they survive the exec.
                if libc::dup2(cr, 3) < 0 || libc::dup2(aw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = ChildGuard::spawn("chromium", &mut cmd)?;
        drop((cmd_r, ans_w));
        let (tx, rx) = mpsc::channel();
        let reader = std::fs::File::from(ans_r);
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            loop {
                let mut buf = Vec::new();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            to: std::fs::File::from(cmd_w),
            from: rx,
            next: 1,
            session: String::new(),
            _child: child,
            _profile: profile,
            log,
        };
        let target = b.call_browser("Target.createTarget", json!({ "url": "about:blank" }))?;
        let id = target["targetId"].as_str().context("Target.createTarget: no targetId")?.to_string();
        let attached = b.call_browser("Target.attachToTarget", json!({ "targetId": id, "flatten": true }))?;
        b.session = attached["sessionId"].as_str().context("Target.attachToTarget: no sessionId")?.to_string();
        b.call("Page.enable", json!({}))?;
        b.call("Runtime.enable", json!({}))?;
        b.call("Network.enable", json!({}))?;
        Ok(b)
    }

    fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        crate::site::tail(&t, 15)
    }

    fn send(&mut self, session: Option<String>, method: &str, params: Value) -> Result<Value> {
        let id = self.next;
        self.next += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        self.to.write_all(&bytes).with_context(|| format!("{method}: writing to chromium\n{}", self.log_tail()))?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = match self.from.recv_timeout(left) {
                Ok(v) => v,
                Err(_) => bail!("{method}: no answer from chromium within {CALL_TIMEOUT:?}\n{}", self.log_tail()),
            };
            if v["id"].as_u64() != Some(id) {
                continue; // an event, or a late answer
            }
            if let Some(e) = v.get("error") {
                bail!("{method}: {e}");
            }
            return Ok(v["result"].clone());
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Result<Value> {
        self.send(None, method, params)
    }

    /// A DevTools command to the page.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let s = self.session.clone();
        self.send(Some(s), method, params)
    }

    /// Load `url` and wait until its document has loaded.
    pub fn goto(&mut self, url: &str) -> Result<()> {
        let r = self.call("Page.navigate", json!({ "url": url }))?;
        if let Some(e) = r.get("errorText").and_then(Value::as_str) {
            bail!("loading {url}: {e}");
        }
        self.wait_until(
            &format!("the page {url} to load"),
            Duration::from_secs(30),
            "document.readyState === 'complete'",
        )?;
        Ok(())
    }

    /// The value of a JavaScript expression (a promise is awaited), as JSON.
    pub fn eval(&mut self, expr: &str) -> Result<Value> {
        let r =
            self.call("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }))?;
        if let Some(ex) = r.get("exceptionDetails") {
            bail!("evaluating {expr}: {}", ex["exception"]["description"].as_str().unwrap_or(&ex.to_string()));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Poll `expr` every 200 ms until it is truthy; its value.
    pub fn wait_until(&mut self, what: &str, limit: Duration, expr: &str) -> Result<Value> {
        let start = Instant::now();
        loop {
            let last = match self.eval(expr) {
                Ok(v) if truthy(&v) => return Ok(v),
                Ok(v) => v,
                Err(e) => json!(format!("{e:#}")),
            };
            if start.elapsed() > limit {
                bail!("timed out after {limit:?} waiting for {what} ({expr}); last value {last}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A PNG of the page's viewport, written to `path`; its size in bytes.
    pub fn screenshot(&mut self, path: &Path) -> Result<usize> {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        let data = r["data"].as_str().context("Page.captureScreenshot: no data")?;
        let png = base64_decode(data).context("Page.captureScreenshot: not base64")?;
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(path, &png).with_context(|| format!("writing {}", path.display()))?;
        Ok(png.len())
    }

    /// Set a cookie for `url` (a forged session, say).
    pub fn set_cookie(&mut self, url: &str, name: &str, value: &str) -> Result<()> {
        let r = self.call("Network.setCookie", json!({ "url": url, "name": name, "value": value }))?;
        if r["success"].as_bool() == Some(false) {
            bail!("Network.setCookie {name} for {url} refused");
        }
        Ok(())
    }

    /// Every cookie the browser holds for `url`.
    pub fn cookies(&mut self, url: &str) -> Result<Vec<Value>> {
        let r = self.call("Network.getCookies", json!({ "urls": [url] }))?;
        Ok(r["cookies"].as_array().cloned().unwrap_or_default())
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Standard base64 (what DevTools sends screenshots in).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= if *c == b'=' { 0 } else { val(*c)? } << (18 - 6 * i);
        }
        let got = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&got[..3 - pad.min(2)]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("aA==").unwrap(), b"h");
        assert!(base64_decode("a$==").is_none());
    }
}
