//! A small HTTP/1.1 server for the installer's tests: static files with Range, If-Range and
//! ETag like a real server, `/metadata`, `/events`, `/log`, and fault injection (drop the connection
//! at given offsets, replace the file mid-download, stall).
//!
//! std `TcpListener` + a thread per connection; every response closes its connection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Clone)]
pub struct File {
    pub body: Arc<Vec<u8>>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl File {
    pub fn new(body: Vec<u8>, etag: &str) -> File {
        File { body: Arc::new(body), etag: Some(format!("\"{etag}\"")), last_modified: None }
    }
}

/// Faults for one path. Offsets are absolute byte positions in the file.
#[derive(Default, Clone)]
pub struct Faults {
    /// Close the connection when the transfer reaches each offset (each once).
    pub drop_at: Vec<u64>,
    /// When a transfer first reaches the offset, publish the new version, then drop.
    pub replace_at: Option<(u64, File)>,
    /// Sleep this long once when the transfer reaches the offset.
    pub stall_at: Option<(u64, Duration)>,
    /// Answer Range requests with the whole file (a server without range support).
    pub ignore_range: bool,
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub status: u16,
}

#[derive(Default)]
pub struct State {
    pub files: HashMap<String, File>,
    pub faults: HashMap<String, Faults>,
    pub metadata: Option<String>,
    pub events: Vec<osie_api::Event>,
    /// Chunks of the installer's console log (`POST /log`).
    pub logs: Vec<osie_api::log::LogChunk>,
    pub log: Vec<Logged>,
    /// Answer this many `/metadata` and `/events` requests with 503 first (a restarting bootsvc).
    pub fail_metadata: u32,
    pub fail_events: u32,
}

pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if sp.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(c) = conn {
                    let st = st.clone();
                    std::thread::spawn(move || {
                        let _ = serve(c, &st);
                    });
                }
            }
        });
        Server { addr, state, stop, thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn put(&self, path: &str, f: File) {
        self.state.lock().unwrap().files.insert(path.to_string(), f);
    }

    pub fn faults(&self, path: &str, f: Faults) {
        self.state.lock().unwrap().faults.insert(path.to_string(), f);
    }

    pub fn set_metadata(&self, json: &str) {
        self.state.lock().unwrap().metadata = Some(json.to_string());
    }

    /// The console log lines received, in the order sent.
    pub fn log_lines(&self) -> Vec<String> {
        let mut c = self.state.lock().unwrap().logs.clone();
        c.sort_by_key(|c| c.seq);
        c.into_iter().flat_map(|c| c.lines).collect()
    }

    pub fn events(&self) -> Vec<osie_api::Event> {
        self.state.lock().unwrap().events.clone()
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(c: TcpStream, st: &Mutex<State>) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = vec![0u8; headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0)];
    r.read_exact(&mut body)?;
    let mut w = c;
    let log = |status: u16| {
        st.lock().unwrap().log.push(Logged {
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
            status,
        })
    };

    match (method.as_str(), path.as_str()) {
        ("GET", "/metadata") if take_failure(st, |s| &mut s.fail_metadata) => {
            log(503);
            respond(&mut w, 503, &[], b"restarting")
        }
        ("POST", "/events") if take_failure(st, |s| &mut s.fail_events) => {
            log(503);
            respond(&mut w, 503, &[], b"restarting")
        }
        ("GET", "/metadata") => {
            let md = st.lock().unwrap().metadata.clone();
            log(if md.is_some() { 200 } else { 404 });
            match md {
                Some(m) => respond(&mut w, 200, &[("Content-Type", "application/json")], m.as_bytes()),
                None => respond(&mut w, 404, &[], b"no such machine"),
            }
        }
        ("POST", "/events") => {
            log(200);
            let ev: osie_api::Event = serde_json::from_slice(&body).expect("installer sent a valid event");
            st.lock().unwrap().events.push(ev);
            respond(&mut w, 200, &[("Content-Type", "application/json")], br#"{"stored":true}"#)
        }
        ("POST", "/log") => {
            log(200);
            let c: osie_api::log::LogChunk = serde_json::from_slice(&body).expect("installer sent a valid log chunk");
            st.lock().unwrap().logs.push(c);
            respond(&mut w, 200, &[("Content-Type", "application/json")], br#"{"stored":true}"#)
        }
        ("GET" | "HEAD", _) => serve_file(&mut w, st, &method, &path, &headers, &log),
        _ => {
            log(405);
            respond(&mut w, 405, &[], b"")
        }
    }
}

/// Consume one injected failure, if any are left.
fn take_failure(st: &Mutex<State>, f: impl FnOnce(&mut State) -> &mut u32) -> bool {
    let mut s = st.lock().unwrap();
    let n = f(&mut s);
    if *n > 0 {
        *n -= 1;
        true
    } else {
        false
    }
}

fn respond(w: &mut TcpStream, status: u16, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<()> {
    let mut head =
        format!("HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n", reason(status), body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

fn reason(s: u16) -> &'static str {
    match s {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        503 => "Service Unavailable",
        _ => "Other",
    }
}

fn serve_file(
    w: &mut TcpStream,
    st: &Mutex<State>,
    method: &str,
    path: &str,
    h: &HashMap<String, String>,
    log: &dyn Fn(u16),
) -> std::io::Result<()> {
    let (file, faults) = {
        let s = st.lock().unwrap();
        (s.files.get(path).cloned(), s.faults.get(path).cloned().unwrap_or_default())
    };
    let Some(file) = file else {
        log(404);
        return respond(w, 404, &[], b"not found");
    };
    let len = file.body.len() as u64;
    let validator_ok = match h.get("if-range") {
        None => true,
        Some(v) => Some(v) == file.etag.as_ref() || Some(v) == file.last_modified.as_ref(),
    };
    let range = h
        .get("range")
        .filter(|_| validator_ok && !faults.ignore_range)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse::<u64>().ok());
    let mut hdrs: Vec<(String, String)> = vec![("Accept-Ranges".into(), "bytes".into())];
    if let Some(e) = &file.etag {
        hdrs.push(("ETag".into(), e.clone()));
    }
    if let Some(m) = &file.last_modified {
        hdrs.push(("Last-Modified".into(), m.clone()));
    }
    let (status, start) = match range {
        Some(s) if s >= len => {
            log(416);
            return respond(w, 416, &[], b"");
        }
        Some(s) => {
            hdrs.push(("Content-Range".into(), format!("bytes {s}-{}/{len}", len - 1)));
            (206, s)
        }
        None => (200, 0),
    };
    log(status);
    let mut head =
        format!("HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n", reason(status), len - start);
    for (k, v) in &hdrs {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return Ok(());
    }
    let mut pos = start;
    while pos < len {
        // The next fault point after pos, if any.
        let mut stop = len.min(pos + (256 << 10));
        let next_drop = faults.drop_at.iter().copied().filter(|&d| d > pos).min();
        let replace = faults.replace_at.as_ref().map(|(o, _)| *o).filter(|&o| o > pos);
        let stall = faults.stall_at.map(|(o, _)| o).filter(|&o| o > pos);
        for p in [next_drop, replace, stall].into_iter().flatten() {
            stop = stop.min(p);
        }
        w.write_all(&file.body[pos as usize..stop as usize])?;
        pos = stop;
        if Some(pos) == next_drop {
            // Each drop point fires once.
            let mut s = st.lock().unwrap();
            if let Some(f) = s.faults.get_mut(path) {
                f.drop_at.retain(|&d| d != pos);
            }
            drop(s);
            w.flush()?;
            let _ = w.shutdown(Shutdown::Both);
            return Ok(());
        }
        if Some(pos) == replace {
            let mut s = st.lock().unwrap();
            if let Some((_, new)) = s.faults.get_mut(path).and_then(|f| f.replace_at.take()) {
                s.files.insert(path.to_string(), new);
            }
            drop(s);
            w.flush()?;
            let _ = w.shutdown(Shutdown::Both);
            return Ok(());
        }
        if Some(pos) == stall {
            let d = st.lock().unwrap().faults.get_mut(path).and_then(|f| f.stall_at.take()).map(|(_, d)| d);
            if let Some(d) = d {
                std::thread::sleep(d);
            }
        }
    }
    w.flush()
}
