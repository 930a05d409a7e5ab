//! HTTP requests from inside a namespace with the real `curl`, as an operator or a machine
//! would send them: status, headers and body of the answer.

use std::path::Path;

use crate::{unique, Netns};

/// What came back; status 0 when curl got no answer at all (its error is in `stderr`).
pub struct Resp {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
    pub stderr: String,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The body as JSON; panics (it is for tests) with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// `curl <args> <url>` in `ns`, within 20 s; the head and body pass through files in
/// `scratch`.
pub fn curl(ns: &Netns, scratch: &Path, args: &[&str], url: &str) -> Resp {
    let id = unique("c");
    let hdr = scratch.join(format!("{id}.hdr"));
    let body = scratch.join(format!("{id}.body"));
    let out = ns
        .cmd("curl")
        .args(["-sS", "--path-as-is", "--max-time", "20", "-D"])
        .arg(&hdr)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return Resp { status: 0, headers: String::new(), body: Vec::new(), stderr: format!("running curl: {e}") }
        }
    };
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    let headers = std::fs::read_to_string(&hdr).unwrap_or_default();
    let body_bytes = std::fs::read(&body).unwrap_or_default();
    let _ = std::fs::remove_file(&hdr);
    let _ = std::fs::remove_file(&body);
    Resp { status, headers, body: body_bytes, stderr: String::from_utf8_lossy(&out.stderr).into() }
}
