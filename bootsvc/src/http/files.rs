//! Static files: artifacts (kernel, initramfs), OS images and the TFTP root (for UEFI HTTP
//! boot). GET and HEAD, one byte range (206/416), `ETag` with `If-None-Match` and
//! `If-Range`, `Last-Modified` with `If-Modified-Since`. Paths are jailed to their
//! directory: no `..`, no hidden files, no symlink that leads outside, checked by the kernel
//! at open time ([`crate::jail`], shared with TFTP).
//!
//! A body is not read here: the answer carries a [`SendFile`] (the open file, offset and
//! length) and an empty body, and the connection loop ([`super::conn`]) moves the bytes from
//! the file to the socket in the kernel with `sendfile(2)`, so a connection holds no buffer
//! of file data however slowly its client reads. The loop reports how it went
//! ([`SendFile::finished`]): the served-file log line states the bytes actually sent.
//!
//! The header logic is pure ([`parse_range`], [`etag_matches`], [`if_range_allows`]) and
//! tested without sockets.

use std::net::SocketAddr;
use std::path::{Component, Path};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Path as UrlPath};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::arch::Arch;
use crate::jail::{Jail, Refusal};
use crate::trace::{Artifact, DownloadStep, Outcome, Step, TraceStep};
use crate::tracer::Tracer;

/// The three file routes: which directory each serves, and what its log lines call a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/artifacts/`: the installer's kernel and initramfs.
    Artifact,
    /// `/images/`: OS images and their manifests.
    Image,
    /// `/ipxe/`: the TFTP root, for UEFI HTTP boot.
    BootProgram,
}

impl Route {
    fn root(self, app: &AppState) -> &Path {
        match self {
            Route::Artifact => &app.cfg.artifacts.dir,
            Route::Image => &app.cfg.artifacts.images_dir,
            Route::BootProgram => &app.cfg.tftp.root,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Route::Artifact => "artifact",
            Route::Image => "image",
            Route::BootProgram => "boot-program",
        }
    }
}

/// What every file request carries, extracted once for the three routes.
pub struct FileRequest {
    app: AppState,
    peer: SocketAddr,
    method: Method,
    headers: HeaderMap,
    path: String,
}

impl FromRequestParts<AppState> for FileRequest {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) =
            ConnectInfo::<SocketAddr>::from_request_parts(parts, app).await.map_err(IntoResponse::into_response)?;
        let UrlPath(path) =
            UrlPath::<String>::from_request_parts(parts, app).await.map_err(IntoResponse::into_response)?;
        Ok(FileRequest {
            app: Arc::clone(app),
            peer,
            method: parts.method.clone(),
            headers: parts.headers.clone(),
            path,
        })
    }
}

pub async fn artifact(r: FileRequest) -> Response {
    serve(Route::Artifact, r).await
}

pub async fn image(r: FileRequest) -> Response {
    serve(Route::Image, r).await
}

pub async fn tftp_root(r: FileRequest) -> Response {
    serve(Route::BootProgram, r).await
}

/// A file answer's bytes, for the connection loop to send with `sendfile(2)`: `len` bytes
/// of `file` from `offset`. Set as a response extension (with `Content-Length: len` and an
/// empty body) by [`serve`]; only bootsvc's own connection loop can send it.
#[derive(Clone)]
pub struct SendFile {
    pub file: Arc<std::fs::File>,
    pub offset: u64,
    pub len: u64,
    served: Arc<Served>,
}

/// Who got which file, for the log line when the transfer ends.
struct Served {
    what: &'static str,
    file: String,
    peer: SocketAddr,
    status: u16,
    host: String,
    mac: String,
    /// Where the boot trace records it, when the caller is an inventory machine.
    trace: Option<(Arc<Tracer>, Artifact)>,
}

impl SendFile {
    /// One line per file sent (a GET answered 200 or 206), naming the machine when the
    /// caller's address is one of the inventory's: operators (and `scripts/demo`'s timeline)
    /// see which machine fetched its kernel, initramfs, image or iPXE binary, when, and how
    /// much of it actually left: `bytes` is what the kernel took from the file, and a transfer
    /// that ended early says why (the client went away, no progress for
    /// `http.write_timeout_secs`, the file shrank).
    pub fn finished(&self, sent: u64, result: Result<(), &std::io::Error>) {
        let s = &*self.served;
        let (what, file, peer, status, host, mac, size) =
            (s.what, &s.file, s.peer, s.status, &s.host, &s.mac, self.len);
        if let Some((tracer, artifact)) = &s.trace {
            let step = DownloadStep {
                artifact: *artifact,
                path: crate::trace::clean(file, crate::trace::MAX_TEXT),
                status,
                bytes: sent,
                size: Some(size),
                outcome: if result.is_ok() { Outcome::Complete } else { Outcome::Abandoned },
                reason: result.err().map(|e| e.to_string()).unwrap_or_default(),
            };
            let at_ms = crate::trace::now_ms();
            let ip = peer.ip();
            tracer.record_ip(ip, |mac| TraceStep {
                at_ms,
                mac,
                source: Some(ip),
                run_id: None,
                step: Step::Download(step),
            });
        }
        match result {
            Ok(()) => tracing::info!(
                %peer, what, file, status, bytes = sent, size, outcome = "complete", host, mac,
                "file served: {what} {file} to {peer} ({host})"
            ),
            Err(e) => tracing::info!(
                %peer, what, file, status, bytes = sent, size, outcome = "cut", reason = %e, host, mac,
                "file transfer cut: {what} {file} to {peer} ({host}): {sent} of {size} bytes sent: {e}"
            ),
        }
    }
}

/// Why a path was refused (logged; the client only sees 404).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JailError {
    #[error("path {0:?} has an empty, '.', '..' or hidden component, a backslash or a NUL")]
    BadComponent(String),
    #[error("path {0:?} does not exist")]
    Missing(String),
    #[error("path {0:?} leads outside the served directory")]
    Escapes(String),
    #[error("path {0:?} is not a regular file")]
    NotAFile(String),
    #[error("path {0:?}: {1}")]
    Io(String, String),
}

/// `rel` (as decoded from the URL) opened inside `root`, with its size. The URL's own rules
/// are checked here (no backslashes, no empty, `.` or `..` components); the name rules
/// shared with TFTP (no hidden component) and the open are [`crate::jail::Jail`]'s
/// (`openat2` with `RESOLVE_BENEATH`), so a symlink swapped in while the request runs still
/// cannot lead out: the kernel resolves and opens in one step.
pub fn jail(root: &Path, rel: &str) -> Result<(std::fs::File, u64), JailError> {
    let bad = || JailError::BadComponent(rel.to_string());
    if rel.is_empty() || rel.contains(['\0', '\\']) {
        return Err(bad());
    }
    for part in rel.split('/') {
        if part.is_empty() {
            return Err(bad());
        }
        let mut comps = Path::new(part).components();
        if !matches!((comps.next(), comps.next()), (Some(Component::Normal(_)), None)) {
            return Err(bad());
        }
    }
    // Opened per request (a few syscalls), so a directory replaced by the operator is seen.
    let dir = Jail::new(root).map_err(|_| JailError::Missing(root.display().to_string()))?;
    dir.open(Path::new(rel)).map_err(|r| match r {
        Refusal::NotFound | Refusal::Empty => JailError::Missing(rel.to_string()),
        Refusal::Hidden => JailError::BadComponent(rel.to_string()),
        Refusal::NotAFile => JailError::NotAFile(rel.to_string()),
        Refusal::Traversal | Refusal::Absolute | Refusal::SymlinkEscape | Refusal::Denied => {
            JailError::Escapes(rel.to_string())
        }
        Refusal::Io(e) => JailError::Io(rel.to_string(), e),
    })
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReq {
    /// No usable range: send everything (also for several ranges, which RFC 9110 allows).
    Full,
    /// Bytes `start..=end`.
    Partial(u64, u64),
    Unsatisfiable,
}

pub fn parse_range(h: &str, size: u64) -> RangeReq {
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return RangeReq::Full };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeReq::Full };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.trim(), b.trim()) {
        ("", "") => RangeReq::Full,
        ("", n) => match num(n) {
            None => RangeReq::Full,
            Some(0) => RangeReq::Unsatisfiable,
            Some(_) if size == 0 => RangeReq::Unsatisfiable,
            Some(n) => RangeReq::Partial(size.saturating_sub(n), size - 1),
        },
        (s, e) => {
            let Some(start) = num(s) else { return RangeReq::Full };
            let end = if e.is_empty() {
                None
            } else {
                match num(e) {
                    Some(e) if e >= start => Some(e),
                    _ => return RangeReq::Full,
                }
            };
            if start >= size {
                return RangeReq::Unsatisfiable;
            }
            RangeReq::Partial(start, end.map_or(size - 1, |e| e.min(size - 1)))
        }
    }
}

/// Strong validator from size and modification time (to the nanosecond): changes whenever
/// the file is rewritten. No inode, so that copies of one image on several instances of a
/// site (`cp -p`, `rsync -a`: same size and mtime) give the same ETag, and an installer whose
/// instance died resumes the download on another (`docs/config.md`, `[http] peers`).
pub fn etag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let mtime_ns = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
    format!("\"{:x}-{:x}\"", meta.len(), mtime_ns)
}

/// `If-None-Match`: a list of tags or `*`, compared weakly (RFC 9110 13.1.2).
pub fn etag_matches(header: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    header.trim() == "*" || header.split(',').any(|t| bare(t) == bare(etag))
}

/// `If-Range`: the range applies only if the validator still matches: the strong ETag, or
/// exactly the `Last-Modified` date.
pub fn if_range_allows(header: &str, etag: &str, last_modified: &str) -> bool {
    let h = header.trim();
    if h.starts_with('"') {
        return h == etag;
    }
    if h.starts_with("W/") {
        return false;
    }
    h == last_modified
}

/// Answer a GET or HEAD on `route`: the headers here, the bytes as a [`SendFile`].
async fn serve(route: Route, r: FileRequest) -> Response {
    let FileRequest { app, peer, method, headers, path: rel } = r;
    let what = route.what();
    let (mut resp, body) = answer(route.root(&app), &rel, &method, &headers).await;
    let status = resp.status();
    // The kernel and initramfs of either architecture (`arm64/…`: docs/arm64.md).
    let artifact = match (route, Arch::split_path(&rel).1) {
        (Route::Artifact, f) if f == app.cfg.artifacts.kernel => Artifact::Kernel,
        (Route::Artifact, f) if f == app.cfg.artifacts.initrd => Artifact::Initramfs,
        (Route::Image, _) => Artifact::Image,
        _ => Artifact::File,
    };
    if let (Some(t), true) = (&app.tracer, status.is_client_error() && method == Method::GET) {
        // Not found (or refused by the jail, or a range past the end): the step the
        // diagnosis names ("kernel … answered HTTP 404").
        let step = DownloadStep {
            artifact,
            path: crate::trace::clean(&rel, crate::trace::MAX_TEXT),
            status: status.as_u16(),
            bytes: 0,
            size: None,
            outcome: Outcome::Refused,
            reason: status.canonical_reason().unwrap_or("refused").to_lowercase(),
        };
        let at_ms = crate::trace::now_ms();
        let ip = peer.ip();
        t.record_ip(ip, |mac| TraceStep { at_ms, mac, source: Some(ip), run_id: None, step: Step::Download(step) });
    }
    if let Some((file, offset, len)) = body {
        let snap = app.storage.snapshot();
        let machine =
            crate::tracer::mac_of(&*app.storage, peer.ip()).and_then(|m| snap.by_mac(&m)).map(|e| e.machine.clone());
        let served = Served {
            what,
            file: rel,
            peer,
            status: status.as_u16(),
            host: machine.as_ref().map(|m| m.hostname.clone()).unwrap_or_else(|| "-".into()),
            mac: machine.as_ref().and_then(|m| m.macs.first()).map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            trace: app.tracer.as_ref().map(|t| (Arc::clone(t), artifact)),
        };
        resp.extensions_mut().insert(SendFile { file: Arc::new(file), offset, len, served: Arc::new(served) });
        return resp;
    }
    tracing::debug!(%peer, what, file = rel, %method, status = status.as_u16(), "file request answered");
    resp
}

/// An open file, the offset and the length of the bytes to send from it.
type FileBytes = (std::fs::File, u64, u64);

/// The answer for `rel` in `root` and, for a GET answered 200 or 206, the file with the
/// offset and length of the bytes to send: open, then decide from the request's
/// conditional and range headers ([`decide`], pure), then build the headers.
async fn answer(root: &Path, rel: &str, method: &Method, headers: &HeaderMap) -> (Response, Option<FileBytes>) {
    let (file, meta) = match open(root, rel).await {
        Ok(f) => f,
        Err(resp) => return (resp, None),
    };
    let v = Validators::of(&meta);
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    let ask = Conditions {
        if_none_match: get(header::IF_NONE_MATCH),
        if_modified_since: get(header::IF_MODIFIED_SINCE),
        range: get(header::RANGE),
        if_range: get(header::IF_RANGE),
    };
    let hv = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    let resp = Response::builder()
        .header(header::ETAG, hv(&v.etag))
        .header(header::LAST_MODIFIED, hv(&v.last_modified))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, content_type(&root.join(rel)));
    let size = v.size;
    let (resp, start, len) = match decide(&ask, &v) {
        Answer::NotModified => {
            return (resp.status(StatusCode::NOT_MODIFIED).body(Body::empty()).unwrap_or_default(), None)
        }
        Answer::Unsatisfiable => {
            let resp = resp
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(Body::empty())
                .unwrap_or_default();
            return (resp, None);
        }
        Answer::Whole => (resp.status(StatusCode::OK), 0, size),
        Answer::Part(s, e) => (
            resp.status(StatusCode::PARTIAL_CONTENT).header(header::CONTENT_RANGE, format!("bytes {s}-{e}/{size}")),
            s,
            e - s + 1,
        ),
    };
    let resp = resp.header(header::CONTENT_LENGTH, len).body(Body::empty()).unwrap_or_default();
    let bytes = (*method != Method::HEAD).then_some((file, start, len));
    (resp, bytes)
}

/// `rel` opened and stat'ed in one trip to the blocking pool; 404 for anything the jail
/// refuses (logged at debug, the client is told nothing more).
async fn open(root: &Path, rel: &str) -> Result<(std::fs::File, std::fs::Metadata), Response> {
    let (root_for_open, rel_for_open) = (root.to_path_buf(), rel.to_string());
    let opened = tokio::task::spawn_blocking(move || {
        let (f, _) = jail(&root_for_open, &rel_for_open)?;
        let meta = f.metadata().map_err(|e| JailError::Io(rel_for_open.clone(), e.to_string()))?;
        Ok::<_, JailError>((f, meta))
    })
    .await;
    match opened {
        Ok(Ok((f, m))) if m.is_file() => Ok((f, m)),
        Ok(Ok(_)) => Err((StatusCode::NOT_FOUND, "not found\n").into_response()),
        Ok(Err(e)) => {
            tracing::debug!(root = %root.display(), error = %e, "file request refused");
            Err((StatusCode::NOT_FOUND, "not found\n").into_response())
        }
        Err(e) => {
            tracing::warn!(root = %root.display(), error = %e, "opening a file failed");
            Err((StatusCode::INTERNAL_SERVER_ERROR, "read error\n").into_response())
        }
    }
}

/// What identifies one version of a file.
pub struct Validators {
    pub size: u64,
    pub mtime: SystemTime,
    pub etag: String,
    pub last_modified: String,
}

impl Validators {
    pub fn of(meta: &std::fs::Metadata) -> Validators {
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        Validators { size: meta.len(), mtime, etag: etag(meta), last_modified: httpdate::fmt_http_date(mtime) }
    }
}

/// The request headers that decide a file answer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Conditions<'a> {
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
}

/// What a file request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 304.
    NotModified,
    /// 200, the whole file.
    Whole,
    /// 206, bytes `start..=end`.
    Part(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// The answer to `ask` for the file `v` describes (RFC 9110: `If-None-Match` before
/// `If-Modified-Since`; a range only while `If-Range` still matches).
pub fn decide(ask: &Conditions<'_>, v: &Validators) -> Answer {
    let not_modified = match (ask.if_none_match, ask.if_modified_since) {
        (Some(inm), _) => etag_matches(inm, &v.etag),
        (None, Some(ims)) => httpdate::parse_http_date(ims).is_ok_and(|t| secs(v.mtime) <= secs(t)),
        _ => false,
    };
    if not_modified {
        return Answer::NotModified;
    }
    let range = match ask.range {
        Some(r) if ask.if_range.is_none_or(|ir| if_range_allows(ir, &v.etag, &v.last_modified)) => {
            parse_range(r, v.size)
        }
        _ => RangeReq::Full,
    };
    match range {
        RangeReq::Full => Answer::Whole,
        RangeReq::Partial(s, e) => Answer::Part(s, e),
        RangeReq::Unsatisfiable => Answer::Unsatisfiable,
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()) {
        Some("ipxe") | Some("txt") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeReq::*;
        let cases = [
            ("bytes=0-99", 1000, Partial(0, 99)),
            ("bytes=100-", 1000, Partial(100, 999)),
            ("bytes=-100", 1000, Partial(900, 999)),
            ("bytes=-5000", 1000, Partial(0, 999)),
            ("bytes=990-5000", 1000, Partial(990, 999)),
            ("bytes=999-999", 1000, Partial(999, 999)),
            ("bytes=1000-", 1000, Unsatisfiable),
            ("bytes=-0", 1000, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-1", 0, Unsatisfiable),
            ("bytes=0-1,5-6", 1000, Full),
            ("bytes=5-1", 1000, Full),
            ("bytes=+5-", 1000, Full),
            ("bytes=a-b", 1000, Full),
            ("items=0-1", 1000, Full),
            ("bytes=-", 1000, Full),
            (" bytes= 2 - 3 ", 1000, Partial(2, 3)),
        ];
        for (h, size, want) in cases {
            assert_eq!(parse_range(h, size), want, "{h:?} of {size}");
        }
    }

    #[test]
    fn copies_with_the_same_size_and_mtime_share_the_etag() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let t = UNIX_EPOCH + std::time::Duration::new(1_790_000_000, 123_456_789);
        for p in [&a, &b] {
            std::fs::write(p, b"image bytes").unwrap();
            std::fs::File::options().write(true).open(p).unwrap().set_modified(t).unwrap();
        }
        let tag = |p: &std::path::Path| etag(&std::fs::metadata(p).unwrap());
        assert_eq!(tag(&a), tag(&b), "two inodes, one file");
        let later = t + std::time::Duration::from_nanos(1);
        std::fs::File::options().write(true).open(&b).unwrap().set_modified(later).unwrap();
        assert_ne!(tag(&a), tag(&b), "another mtime is another file");
        std::fs::write(&b, b"image bytez").unwrap();
        std::fs::File::options().write(true).open(&b).unwrap().set_modified(t).unwrap();
        assert_eq!(tag(&a), tag(&b), "same size and mtime: the operator's promise that the content is the same");
    }

    #[test]
    fn conditionals() {
        let tag = "\"1-2-3\"";
        assert!(etag_matches("\"1-2-3\"", tag));
        assert!(etag_matches("W/\"1-2-3\"", tag));
        assert!(etag_matches("\"x\", \"1-2-3\"", tag));
        assert!(etag_matches("*", tag));
        assert!(!etag_matches("\"1-2-4\"", tag));
        let lm = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert!(if_range_allows("\"1-2-3\"", tag, lm));
        assert!(!if_range_allows("W/\"1-2-3\"", tag, lm), "If-Range needs a strong validator");
        assert!(!if_range_allows("\"old\"", tag, lm));
        assert!(if_range_allows(lm, tag, lm));
        assert!(!if_range_allows("Mon, 07 Nov 1994 08:49:37 GMT", tag, lm));
    }

    #[test]
    fn decisions_in_rfc_order() {
        let mtime = UNIX_EPOCH + std::time::Duration::from_secs(784_111_777); // 06 Nov 1994 08:49:37
        let lm = httpdate::fmt_http_date(mtime);
        let v = Validators { size: 1000, mtime, etag: "\"1-2-3\"".into(), last_modified: lm.clone() };
        let later = "Mon, 07 Nov 1994 08:49:37 GMT";
        let earlier = "Sat, 05 Nov 1994 08:49:37 GMT";
        let c = |inm, ims, range, ir| Conditions { if_none_match: inm, if_modified_since: ims, range, if_range: ir };
        let cases = [
            (c(None, None, None, None), Answer::Whole),
            (c(Some("\"1-2-3\""), None, None, None), Answer::NotModified),
            (c(Some("\"other\""), Some(later), None, None), Answer::Whole),
            (c(None, Some(later), None, None), Answer::NotModified),
            (c(None, Some(lm.as_str()), None, None), Answer::NotModified),
            (c(None, Some(earlier), None, None), Answer::Whole),
            (c(None, Some("not a date"), None, None), Answer::Whole),
            (c(None, None, Some("bytes=10-19"), None), Answer::Part(10, 19)),
            (c(None, None, Some("bytes=10-19"), Some("\"1-2-3\"")), Answer::Part(10, 19)),
            (c(None, None, Some("bytes=10-19"), Some("\"old\"")), Answer::Whole),
            (c(None, None, Some("bytes=10-19"), Some(lm.as_str())), Answer::Part(10, 19)),
            (c(None, None, Some("bytes=1000-"), None), Answer::Unsatisfiable),
            (c(Some("*"), None, Some("bytes=1000-"), None), Answer::NotModified),
        ];
        for (ask, want) in cases {
            assert_eq!(decide(&ask, &v), want, "{ask:?}");
        }
    }

    fn read_jailed(root: &Path, rel: &str) -> Result<Vec<u8>, JailError> {
        use std::io::Read;
        let (mut f, size) = jail(root, rel)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        assert_eq!(v.len() as u64, size);
        Ok(v)
    }

    #[test]
    fn jail_keeps_requests_inside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.bin"), b"a").unwrap();
        std::fs::write(root.join(".hidden"), b"h").unwrap();
        std::fs::write(d.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("../../secret", root.join("sub/up")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/a.bin"), root.join("in-abs")).unwrap();
        std::os::unix::fs::symlink("sub/a.bin", root.join("in")).unwrap();
        assert_eq!(read_jailed(&root, "sub/a.bin").unwrap(), b"a");
        assert_eq!(read_jailed(&root, "in").unwrap(), b"a", "a relative symlink inside the root is fine");
        assert!(matches!(jail(&root, "out"), Err(JailError::Escapes(_))));
        assert!(matches!(jail(&root, "sub/up"), Err(JailError::Escapes(_))));
        // An absolute symlink is resolved beneath the root by openat2, so even one pointing
        // inside is refused: the jail never follows a path that starts outside.
        assert!(matches!(jail(&root, "in-abs"), Err(JailError::Escapes(_))));
        for bad in ["../secret", "sub/../../secret", "/etc/passwd", ".hidden", "sub//a.bin", "./sub/a.bin", "a\\b", ""]
        {
            assert!(matches!(jail(&root, bad), Err(JailError::BadComponent(_))), "{bad:?}");
        }
        assert!(matches!(jail(&root, "nope"), Err(JailError::Missing(_))));
        assert!(matches!(jail(&root, "sub"), Err(JailError::NotAFile(_))));
    }

    /// The old jail resolved the path, checked it, then opened it by name: a symlink swapped
    /// between the two steps led out. Here one thread swaps `root/link` between a file inside
    /// and the secret outside as fast as it can while this thread opens `link`: the secret
    /// must never come back.
    #[test]
    fn symlink_swapped_during_the_open_never_leads_out() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("inside"), b"inside").unwrap();
        std::fs::write(d.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink("inside", root.join("link")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, root) = (Arc::clone(&stop), root.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let target = if n.is_multiple_of(2) { "../secret" } else { "inside" };
                    let tmp = root.join(".swap");
                    let _ = std::fs::remove_file(&tmp);
                    std::os::unix::fs::symlink(target, &tmp).unwrap();
                    std::fs::rename(&tmp, root.join("link")).unwrap();
                    n += 1;
                }
                n
            })
        };
        let (mut served, mut refused) = (0, 0);
        for _ in 0..20_000 {
            match read_jailed(&root, "link") {
                Ok(v) => {
                    assert_eq!(v, b"inside", "the jail served a file outside its root");
                    served += 1;
                }
                Err(_) => refused += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(swaps > 100 && served > 0 && refused > 0, "swaps {swaps}, served {served}, refused {refused}");
    }
}
