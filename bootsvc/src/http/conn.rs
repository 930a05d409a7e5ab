//! One HTTP/1.1 connection: read a request head ([`wire`]), its body, call the axum
//! `Router` (routing, handlers, limits and metrics stay what they are), write the answer,
//! and again for the next request on the connection (keep-alive, sequential pipelining).
//!
//! bootsvc runs this loop instead of hyper's because hyper owns the socket and cannot
//! `sendfile(2)`: a file answer ([`SendFile`], from [`super::files`]) goes from the page
//! cache to the socket in the kernel, so a connection holds no user-space copy of file data
//! however slowly its client reads. Everything a connection can hold is bounded:
//! - the request head: `http.max_header_bytes`, within `http.request_timeout_secs` of the
//!   connection (or of its first byte, after a keep-alive wait);
//! - the wait for the next request: `http.idle_timeout_secs`;
//! - a request body: `http.max_body_bytes` (declared or chunked: the router answers 413),
//!   read within `http.request_timeout_secs`;
//! - every write: no progress for `http.write_timeout_secs` closes the connection.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, Response, StatusCode, Version};
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{timeout, timeout_at, Instant};
use tower::ServiceExt;

use super::files::SendFile;
use super::observe;
use super::wire::{self, BodyFraming, Decoded, HeadError, RequestHead, ResponseFraming};
use crate::metrics::Metrics;

/// Read size while waiting for a head: most heads fit, and an idle connection's buffer
/// stays small.
const HEAD_READ: usize = 4096;
/// Read size for request bodies.
const BODY_READ: usize = 64 << 10;
/// Closing with request bytes unread: wait this long (and this much) for the client to
/// finish sending before the socket closes, so the kernel sends our answer instead of a
/// reset that would discard it (a client still uploading a refused body).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;
/// Largest count for one `sendfile(2)` call (the kernel's own per-call limit).
const SENDFILE_MAX: u64 = 0x7fff_f000;

/// The limits every connection of a listener is served with.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_head: usize,
    pub max_body: usize,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
}

/// An accepted connection: TCP (the machines' listener, or the admin API on an address) or
/// a Unix socket (the admin API on a path).
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    async fn readable(&self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.readable().await,
            Sock::Unix(s) => s.readable().await,
        }
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.try_read_buf(buf),
            Sock::Unix(s) => s.try_read_buf(buf),
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.writable().await,
            Sock::Unix(s) => s.writable().await,
        }
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.try_write_vectored(bufs),
            Sock::Unix(s) => s.try_write_vectored(bufs),
        }
    }

    /// One non-blocking write (for an answer that fits a fresh socket's buffer).
    pub fn try_write(&self, b: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.try_write(b),
            Sock::Unix(s) => s.try_write(b),
        }
    }

    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            Sock::Tcp(s) => s.try_io(interest, f),
            Sock::Unix(s) => s.try_io(interest, f),
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// How the request loop ended, which decides how the socket is closed.
enum End {
    /// Nothing unread: send FIN and close.
    Clean,
    /// Request bytes may still be arriving (a refused body, a refused head): send FIN, read
    /// and drop what comes for a while, then close.
    Linger,
    /// The connection is broken or timed out writing: just close.
    Abort,
}

/// Why reading a request (head or body) stopped.
enum ReadEnd {
    /// The client closed between requests.
    Closed,
    /// No new request within `http.idle_timeout_secs` after the last answer.
    Idle,
    /// The head (or the body) did not arrive within `http.request_timeout_secs`.
    Timeout {
        body: bool,
    },
    Refused(HeadError),
    Io(io::Error),
}

struct Conn {
    sock: Sock,
    /// `None` for a Unix socket.
    peer: Option<SocketAddr>,
    /// Bytes read and not yet used: the start of the next head, or a pipelined request.
    buf: BytesMut,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    answered: u64,
    /// The answer being written is a file (whose transfer logs its own end).
    sending_file: bool,
}

/// Serve one connection until it closes.
pub async fn serve(sock: Sock, peer: Option<SocketAddr>, router: Router, limits: Arc<Limits>, metrics: Arc<Metrics>) {
    let mut c = Conn { sock, peer, buf: BytesMut::new(), limits, metrics, answered: 0, sending_file: false };
    let end = c.requests(&router).await;
    c.close(end).await;
}

impl Conn {
    fn peer_text(&self) -> String {
        self.peer.map_or_else(|| "local socket".to_string(), |p| p.to_string())
    }

    async fn requests(&mut self, router: &Router) -> End {
        loop {
            let head = match self.read_head().await {
                Ok(h) => h,
                Err(e) => return self.refuse(e).await,
            };
            self.buf.advance(head.len);
            let (body, unread) = match self.read_body(&head).await {
                Ok(b) => b,
                Err(e) => return self.refuse(e).await,
            };
            let (method, version, keep_alive) = (head.method.clone(), head.version, head.keep_alive && !unread);
            let mut req = Request::new(Body::from(body));
            *req.method_mut() = head.method;
            *req.uri_mut() = head.uri;
            *req.version_mut() = head.version;
            *req.headers_mut() = head.headers;
            if let Some(p) = self.peer {
                req.extensions_mut().insert(ConnectInfo(p));
            }
            let resp = match router.clone().oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            self.answered += 1;
            match self.respond(&method, version, keep_alive, resp).await {
                Ok(true) => continue,
                Ok(false) if unread => return End::Linger,
                Ok(false) => return End::Clean,
                Err(e) => {
                    self.write_failed(&e);
                    return End::Abort;
                }
            }
        }
    }

    /// Answer (or not) what ended the request loop, and say how to close.
    async fn refuse(&mut self, e: ReadEnd) -> End {
        let peer = self.peer_text();
        match e {
            ReadEnd::Closed => End::Clean,
            ReadEnd::Idle => {
                tracing::debug!(%peer, "closed an idle keep-alive connection (http.idle_timeout_secs)");
                End::Clean
            }
            ReadEnd::Timeout { body: false } => {
                self.metrics.drop_reason("http-header-timeout");
                tracing::debug!(%peer, "closed a connection that did not send its request head in time");
                End::Clean
            }
            ReadEnd::Timeout { body: true } => {
                self.metrics.drop_reason("http-timeout");
                tracing::info!(%peer, "request body not received within http.request_timeout_secs (408)");
                self.answer_plain(StatusCode::REQUEST_TIMEOUT, "request body not received in time\n").await
            }
            ReadEnd::Refused(h) => {
                observe::refused_head(&self.metrics, &peer, &h);
                let text = match &h {
                    HeadError::TooLarge => "request head too large\n".to_string(),
                    other => format!("{other}\n"),
                };
                self.answer_plain(h.status(), &text).await
            }
            ReadEnd::Io(e) => {
                tracing::debug!(%peer, error = %e, "HTTP connection failed while reading");
                End::Abort
            }
        }
    }

    async fn answer_plain(&mut self, status: StatusCode, text: &str) -> End {
        let resp = wire::plain_response(status, text, &[], &http_date());
        match self.write_all(&[&resp]).await {
            Ok(()) => End::Linger,
            Err(e) => {
                self.write_failed(&e);
                End::Abort
            }
        }
    }

    /// Read until a whole head is in the buffer. The first head must arrive within
    /// `request_timeout` of the connection; later ones within `idle_timeout` for their first
    /// byte, then `request_timeout` for the rest.
    async fn read_head(&mut self) -> Result<RequestHead, ReadEnd> {
        let l = Arc::clone(&self.limits);
        let first = self.answered == 0;
        let mut deadline = if first || !self.buf.is_empty() {
            Instant::now() + l.request_timeout
        } else {
            Instant::now() + l.idle_timeout
        };
        let mut waiting_idle = !first && self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                if waiting_idle {
                    waiting_idle = false;
                    deadline = Instant::now() + l.request_timeout;
                }
                if let Some(h) = wire::parse_head(&self.buf, l.max_head).map_err(ReadEnd::Refused)? {
                    return Ok(h);
                }
            } else if self.buf.capacity() > 2 * HEAD_READ {
                // A keep-alive connection waits with a small buffer, whatever its last request was.
                self.buf = BytesMut::new();
            }
            match timeout_at(deadline, self.read_more(HEAD_READ)).await {
                Err(_) if waiting_idle => return Err(ReadEnd::Idle),
                Err(_) => return Err(ReadEnd::Timeout { body: false }),
                Ok(Ok(0)) => return Err(ReadEnd::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ReadEnd::Io(e)),
            }
        }
    }

    /// Read up to `want` more bytes into the buffer; 0 at end of stream.
    async fn read_more(&mut self, want: usize) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < want.min(1024) {
            self.buf.reserve(want);
        }
        loop {
            self.sock.readable().await?;
            match self.sock.try_read_buf(&mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// The request body, and whether bytes of it were left unread (over `max_body`: the
    /// router refuses it with 413 and the connection closes after the answer).
    async fn read_body(&mut self, head: &RequestHead) -> Result<(Bytes, bool), ReadEnd> {
        let max = self.limits.max_body;
        let deadline = Instant::now() + self.limits.request_timeout;
        match head.body {
            BodyFraming::None => Ok((Bytes::new(), false)),
            // The router sees Content-Length over the limit and answers 413 unread.
            BodyFraming::Length(n) if n > max as u64 => Ok((Bytes::new(), true)),
            BodyFraming::Length(n) => {
                let n = n as usize;
                if head.expect_continue && self.buf.len() < n {
                    self.continue_100().await?;
                }
                while self.buf.len() < n {
                    let want = (n - self.buf.len()).min(BODY_READ);
                    self.read_body_more(deadline, want).await?;
                }
                Ok((self.buf.split_to(n).freeze(), false))
            }
            BodyFraming::Chunked => {
                if head.expect_continue {
                    self.continue_100().await?;
                }
                let mut decoder = wire::ChunkedDecoder::default();
                let mut out = BytesMut::new();
                loop {
                    match decoder
                        .decode(&mut self.buf, &mut out, max, self.limits.max_head)
                        .map_err(ReadEnd::Refused)?
                    {
                        Decoded::Done => return Ok((out.freeze(), false)),
                        // `max + 1` bytes: the router's body limit refuses them with 413.
                        Decoded::OverLimit => return Ok((out.freeze(), true)),
                        Decoded::NeedMore => self.read_body_more(deadline, BODY_READ).await?,
                    }
                }
            }
        }
    }

    async fn read_body_more(&mut self, deadline: Instant, want: usize) -> Result<(), ReadEnd> {
        match timeout_at(deadline, self.read_more(want)).await {
            Err(_) => Err(ReadEnd::Timeout { body: true }),
            Ok(Ok(0)) => Err(ReadEnd::Closed),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ReadEnd::Io(e)),
        }
    }

    async fn continue_100(&mut self) -> Result<(), ReadEnd> {
        self.write_all(&[b"HTTP/1.1 100 Continue\r\n\r\n"]).await.map_err(ReadEnd::Io)
    }

    /// Write the answer; `Ok(true)` when the connection stays open for another request.
    async fn respond(
        &mut self,
        method: &Method,
        version: Version,
        keep_alive: bool,
        resp: Response<Body>,
    ) -> io::Result<bool> {
        let (mut parts, body) = resp.into_parts();
        let file = parts.extensions.remove::<SendFile>();
        self.sending_file = file.is_some();
        let exact = match &file {
            Some(f) => Some(f.len),
            None => HttpBody::size_hint(&body).exact(),
        };
        let framing = wire::response_framing(method, parts.status, exact, version);
        let close = !keep_alive
            || framing == ResponseFraming::UntilClose
            || wire::has_token(&parts.headers, header::CONNECTION, "close");
        let mut head = Vec::with_capacity(512);
        wire::response_head(parts.status, &parts.headers, framing, close, version, &http_date(), &mut head);
        match (framing, file) {
            (ResponseFraming::Length(_), Some(f)) => self.send_file(&head, &f).await?,
            (ResponseFraming::Empty, _) => self.write_all(&[&head]).await?,
            (_, _) => self.write_body(head, body, framing).await?,
        }
        Ok(!close)
    }

    /// A body from the router, written as its frames come (the head goes with the first).
    async fn write_body(&mut self, head: Vec<u8>, mut body: Body, framing: ResponseFraming) -> io::Result<()> {
        let mut pending: Vec<Bytes> = vec![Bytes::from(head)];
        let mut sent = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| io::Error::other(format!("producing the response body: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            if let ResponseFraming::Length(n) = framing {
                if sent > n {
                    return Err(io::Error::other("the response body is longer than its length"));
                }
            }
            if framing == ResponseFraming::Chunked {
                pending.push(Bytes::from(format!("{:x}\r\n", data.len())));
                pending.push(data);
                pending.push(Bytes::from_static(b"\r\n"));
            } else {
                pending.push(data);
            }
            self.write_bytes(&pending).await?;
            pending.clear();
        }
        match framing {
            ResponseFraming::Chunked => pending.push(Bytes::from_static(b"0\r\n\r\n")),
            ResponseFraming::Length(n) if sent != n => {
                return Err(io::Error::other("the response body is shorter than its length"));
            }
            _ => {}
        }
        self.write_bytes(&pending).await
    }

    async fn write_bytes(&mut self, bufs: &[Bytes]) -> io::Result<()> {
        let slices: Vec<&[u8]> = bufs.iter().map(|b| b.as_ref()).collect();
        self.write_all(&slices).await
    }

    /// Write every buffer, waiting at most `write_timeout` for each bit of progress.
    async fn write_all(&self, bufs: &[&[u8]]) -> io::Result<()> {
        let mut slices: Vec<IoSlice> = bufs.iter().filter(|b| !b.is_empty()).map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match self.sock.try_write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn wait_writable(&self) -> io::Result<()> {
        let t = self.limits.write_timeout;
        match timeout(t, self.sock.writable()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no progress writing for {} s (http.write_timeout_secs)", t.as_secs()),
            )),
        }
    }

    /// The head (held back with `MSG_MORE` so it leaves in the first segment with the file's
    /// bytes), then the file with `sendfile(2)`, corked: only full segments leave until the
    /// end (the socket is `TCP_NODELAY` for small answers, which would otherwise push a short
    /// segment every time the window opens a little). The log line says how much left.
    async fn send_file(&mut self, head: &[u8], f: &SendFile) -> io::Result<()> {
        let fd = self.sock.fd();
        self.cork(true);
        let mut off = 0;
        while off < head.len() {
            let rest = &head[off..];
            let r = self.sock.try_io(Interest::WRITABLE, || {
                // SAFETY: `rest` is a valid buffer for the call; `fd` is this connection's socket.
                let n =
                    unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_MORE | libc::MSG_NOSIGNAL) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.wait_writable().await {
                        f.finished(0, Err(&e));
                        return Err(e);
                    }
                }
                Err(e) => {
                    f.finished(0, Err(&e));
                    return Err(e);
                }
            }
        }
        let (sent, result) = self.sendfile(f).await;
        f.finished(sent, result.as_ref().map(|_| ()));
        // Uncorking sends the last, partial segment now.
        self.cork(false);
        result
    }

    fn cork(&self, on: bool) {
        if let Sock::Tcp(_) = self.sock {
            let v: libc::c_int = on.into();
            // SAFETY: setsockopt on this connection's socket with a valid int option value.
            unsafe {
                libc::setsockopt(
                    self.sock.fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_CORK,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
    }

    /// `f.len` bytes of `f.file` from `f.offset`, file to socket in the kernel; how many
    /// went, and the error that stopped it early.
    async fn sendfile(&mut self, f: &SendFile) -> (u64, io::Result<()>) {
        let (sock, file) = (self.sock.fd(), f.file.as_raw_fd());
        let mut offset = f.offset as libc::off_t;
        let mut left = f.len;
        while left > 0 {
            let count = left.min(SENDFILE_MAX) as usize;
            let r = self.sock.try_io(Interest::WRITABLE, || {
                // SAFETY: both descriptors are open for the call; `offset` is a valid pointer.
                let n = unsafe { libc::sendfile(sock, file, &mut offset, count) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as u64)
                }
            });
            match r {
                Ok(0) => {
                    return (
                        f.len - left,
                        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was sent")),
                    )
                }
                Ok(n) => {
                    left -= n;
                    self.metrics.http_sendfile_bytes.inc_by(n);
                    // A fast client never makes the socket wait: let the other connections on
                    // this worker run now and then.
                    tokio::task::coop::consume_budget().await;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.wait_writable().await {
                        return (f.len - left, Err(e));
                    }
                }
                Err(e) => return (f.len - left, Err(e)),
            }
        }
        (f.len, Ok(()))
    }

    fn write_failed(&self, e: &io::Error) {
        let peer = self.peer_text();
        if e.kind() == io::ErrorKind::TimedOut {
            self.metrics.drop_reason("http-write-timeout");
            if self.sending_file {
                tracing::debug!(%peer, "closed a connection that stopped reading: {e}");
            } else {
                tracing::info!(%peer, "closed a connection that stopped reading: {e}");
            }
        } else {
            tracing::debug!(%peer, error = %e, "HTTP connection ended while writing");
        }
    }

    /// Close: FIN first; with request bytes possibly still coming, read and drop them for a
    /// short while so the close does not reset the connection under our answer.
    async fn close(mut self, end: End) {
        if matches!(end, End::Abort) {
            return;
        }
        // SAFETY: shutting down the write side of this connection's own socket.
        unsafe { libc::shutdown(self.sock.fd(), libc::SHUT_WR) };
        let linger = matches!(end, End::Linger) || !self.buf.is_empty();
        let deadline = Instant::now() + if linger { LINGER } else { Duration::ZERO };
        let mut dropped = 0;
        self.buf = BytesMut::new();
        while dropped < LINGER_BYTES {
            self.buf.clear();
            let r = if linger {
                match timeout_at(deadline, self.read_more(HEAD_READ)).await {
                    Ok(r) => r,
                    Err(_) => break,
                }
            } else {
                self.buf.reserve(HEAD_READ);
                self.sock.try_read_buf(&mut self.buf)
            };
            match r {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    }
}

/// `Date:` for now, formatted once a second per thread.
fn http_date() -> String {
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        c.1.clone()
    })
}
