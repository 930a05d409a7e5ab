//! The listeners: accept, admit under the connection caps, and hand each connection to
//! [`super::conn`]. Two of them: the machines' (`http.listen`) and the admin API's
//! (`admin.listen`, an address or a Unix socket), each with its own router.
//!
//! Caps: at most `max_connections` open at once, at most `max_connections_per_source` from
//! one source address. A connection over a cap is answered `503` with `Retry-After` at once
//! and closed, counted in `osie_dropped_packets_total{reason=…}`
//! (`http-too-many-connections`, `http-too-many-from-source`), and logged at most once every
//! [`LOG_EVERY`] with the number refused since the last line.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::http::StatusCode;
use axum::Router;

use super::conn::{self, Limits, Sock};
use super::wire;
use crate::droplog::RateLog;
use crate::metrics::Metrics;

/// Refusals of the same kind are logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// A bound listening socket (bound before privileges are dropped).
pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

impl Listener {
    /// Bind `addr` (a plain socket: no async runtime needed, so it can be bound before the
    /// runtime starts and privileges are dropped).
    pub fn tcp(addr: SocketAddr, what: &str) -> Result<Listener> {
        let l = std::net::TcpListener::bind(addr).with_context(|| format!("binding {what} on {addr}"))?;
        l.set_nonblocking(true).with_context(|| format!("setting the {what} listener non-blocking"))?;
        Ok(Listener::Tcp(l))
    }

    /// Bind a Unix socket at `path`, readable and writable by its owner only (root: the CLI
    /// reads the root-only token file anyway). A socket left by an earlier run is replaced;
    /// anything else at the path is an error.
    pub fn unix(path: &Path, what: &str) -> Result<Listener> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(path).with_context(|| format!("removing the old socket {}", path.display()))?
            }
            Ok(_) => anyhow::bail!("{}: exists and is not a socket; {what} will not replace it", path.display()),
            Err(_) => {}
        }
        let l = std::os::unix::net::UnixListener::bind(path)
            .with_context(|| format!("binding {what} on {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
        l.set_nonblocking(true).with_context(|| format!("setting the {what} listener non-blocking"))?;
        Ok(Listener::Unix(l, path.to_path_buf()))
    }

    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into()),
            Listener::Unix(_, p) => p.display().to_string(),
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }
}

/// How many connections are open, in total and per source address.
pub struct Caps {
    total: usize,
    per_source: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
    /// Most open at once since [`Caps::fell_since_peak`] last looked.
    peak: usize,
}

/// Which cap a connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Total,
    Source,
}

impl Over {
    fn reason(self) -> &'static str {
        match self {
            Over::Total => "http-too-many-connections",
            Over::Source => "http-too-many-from-source",
        }
    }
}

/// A connection's place under the caps, given back when it is dropped.
pub struct Slot {
    caps: Arc<Caps>,
    source: Option<IpAddr>,
}

impl Caps {
    pub fn new(total: usize, per_source: usize) -> Arc<Caps> {
        Arc::new(Caps { total, per_source, open: Mutex::new(Open::default()) })
    }

    /// A slot for a connection from `source` (`None`: a Unix socket, under the total only).
    pub fn admit(self: &Arc<Self>, source: Option<IpAddr>) -> Result<Slot, Over> {
        let mut g = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if g.total >= self.total {
            return Err(Over::Total);
        }
        if let Some(ip) = source {
            let n = g.by_source.entry(ip).or_insert(0);
            if *n >= self.per_source {
                return Err(Over::Source);
            }
            *n += 1;
        }
        g.total += 1;
        g.peak = g.peak.max(g.total);
        Ok(Slot { caps: Arc::clone(self), source })
    }

    /// Connections open now, in total and from `source`.
    pub fn open(&self, source: IpAddr) -> (usize, usize) {
        let g = self.open.lock().unwrap_or_else(|e| e.into_inner());
        (g.total, g.by_source.get(&source).copied().unwrap_or(0))
    }

    /// How many fewer connections are open than at the peak since the last call.
    fn fell_since_peak(&self) -> usize {
        let mut g = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let fell = g.peak - g.total;
        g.peak = g.total;
        fell
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.caps.open.lock().unwrap_or_else(|e| e.into_inner());
        g.total = g.total.saturating_sub(1);
        if let Some(ip) = self.source {
            if let Some(n) = g.by_source.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    g.by_source.remove(&ip);
                }
            }
        }
    }
}

/// A connection counted in `osie_http_connections` while it lives.
struct Counted(Arc<Metrics>);

impl Counted {
    fn new(m: Arc<Metrics>) -> Counted {
        m.http_connections.inc();
        Counted(m)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.http_connections.dec();
    }
}

/// A bound listener with the router, limits and caps its connections are served with.
pub struct HttpServer {
    name: &'static str,
    listener: Listener,
    router: Router,
    limits: Arc<Limits>,
    caps: Arc<Caps>,
    metrics: Arc<Metrics>,
    refusals: [RateLog; 2],
}

impl HttpServer {
    pub fn new(
        name: &'static str,
        listener: Listener,
        router: Router,
        limits: Limits,
        caps: Arc<Caps>,
        metrics: Arc<Metrics>,
    ) -> HttpServer {
        let refusals = [RateLog::new(LOG_EVERY), RateLog::new(LOG_EVERY)];
        HttpServer { name, listener, router, limits: Arc::new(limits), caps, metrics, refusals }
    }

    pub fn describe(&self) -> String {
        self.listener.describe()
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept and serve connections until the task is dropped.
    pub async fn run(self) -> Result<()> {
        let trim = tokio::spawn(give_back_memory(Arc::clone(&self.caps)));
        let r = self.accept().await;
        trim.abort();
        r
    }

    async fn accept(&self) -> Result<()> {
        match self.listener {
            Listener::Tcp(ref l) => {
                let l = tokio::net::TcpListener::from_std(l.try_clone()?)
                    .with_context(|| format!("registering the {} listener", self.name))?;
                loop {
                    match l.accept().await {
                        Ok((s, peer)) => {
                            // Small answers go out at once; file heads are held back with
                            // MSG_MORE instead (conn.rs).
                            let _ = s.set_nodelay(true);
                            self.admit(Sock::Tcp(s), Some(peer));
                        }
                        Err(e) => self.accept_failed(e).await,
                    }
                }
            }
            Listener::Unix(ref l, _) => {
                let l = tokio::net::UnixListener::from_std(l.try_clone()?)
                    .with_context(|| format!("registering the {} listener", self.name))?;
                loop {
                    match l.accept().await {
                        Ok((s, _)) => self.admit(Sock::Unix(s), None),
                        Err(e) => self.accept_failed(e).await,
                    }
                }
            }
        }
    }

    async fn accept_failed(&self, e: std::io::Error) {
        // Out of file descriptors and the like: back off instead of spinning.
        tracing::warn!(listener = self.name, error = %e, "accepting a connection failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    fn admit(&self, sock: Sock, peer: Option<SocketAddr>) {
        match self.caps.admit(peer.map(|p| p.ip())) {
            Ok(slot) => {
                let (router, limits, metrics) =
                    (self.router.clone(), Arc::clone(&self.limits), Arc::clone(&self.metrics));
                let counted = Counted::new(Arc::clone(&metrics));
                tokio::spawn(async move {
                    // Given back when the task ends, even by a panic in a handler.
                    let _held = (slot, counted);
                    conn::serve(sock, peer, router, limits, metrics).await;
                });
            }
            Err(over) => self.refuse(sock, peer, over),
        }
    }

    /// Answer 503 in one non-blocking write (a fresh socket has room for it) and close.
    fn refuse(&self, sock: Sock, peer: Option<SocketAddr>, over: Over) {
        self.metrics.drop_reason(over.reason());
        let text = match over {
            Over::Total => "too many connections to this server\n",
            Over::Source => "too many connections from your address\n",
        };
        let resp = wire::plain_response(
            StatusCode::SERVICE_UNAVAILABLE,
            text,
            &[("retry-after", "5")],
            &httpdate::fmt_http_date(std::time::SystemTime::now()),
        );
        let _ = sock.try_write(&resp);
        let idx = usize::from(over == Over::Source);
        if let Some(n) = self.refusals[idx].hit(Instant::now()) {
            let (cap, field) = match over {
                Over::Total => (self.caps.total, "max_connections"),
                Over::Source => (self.caps.per_source, "max_connections_per_source"),
            };
            let peer = peer.map_or_else(|| "local socket".into(), |p| p.to_string());
            tracing::warn!(
                listener = self.name, refused = n, cap, last = %peer, reason = over.reason(),
                "refused {n} {} connection(s) over the cap of {cap} ({field}) in the last {} s; the last from {peer}",
                self.name, LOG_EVERY.as_secs()
            );
        }
    }
}

/// Check this often whether a crowd of connections has gone.
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// A crowd: this many fewer connections than at the peak since the last check.
const TRIM_AFTER: usize = 64;

/// Give the memory of a crowd of closed connections back to the system. glibc's allocator
/// keeps freed memory mapped for reuse (per-thread arenas, pages between live allocations),
/// so after hundreds of connections close the process would stay at its peak size;
/// `malloc_trim` hands the free pages back.
async fn give_back_memory(caps: Arc<Caps>) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    loop {
        tick.tick().await;
        if caps.fell_since_peak() >= TRIM_AFTER {
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only returns free memory of the allocator to the system.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    }
}

/// Raise the soft limit of open files to the hard limit, so the connection caps, not the
/// descriptor limit, bound how many connections are served (every connection holds a socket
/// and, while it sends a file, the file). Returns the new soft limit.
pub fn raise_fd_limit() -> Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit for the kernel to fill in and to read.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading RLIMIT_NOFILE");
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error()).context("raising RLIMIT_NOFILE to its hard limit");
        }
    }
    Ok(lim.rlim_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_in_total_and_per_source() {
        let caps = Caps::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.11".parse().unwrap(), "192.0.2.12".parse().unwrap());
        let a1 = caps.admit(Some(a)).unwrap();
        let _a2 = caps.admit(Some(a)).unwrap();
        assert_eq!(caps.admit(Some(a)).err(), Some(Over::Source));
        let _b1 = caps.admit(Some(b)).unwrap();
        assert_eq!(caps.admit(Some(b)).err(), Some(Over::Total));
        assert_eq!(caps.admit(None).err(), Some(Over::Total));
        drop(a1);
        assert_eq!(caps.open(a), (2, 1));
        let _n = caps.admit(None).unwrap();
        assert_eq!(caps.open(b), (3, 1));
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let get = || {
            let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: a valid rlimit to fill in.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
            l
        };
        let mut l = get();
        if l.rlim_max < 512 {
            return;
        }
        l.rlim_cur = 256;
        // SAFETY: lowering this test process's own soft limit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) }, 0);
        assert_eq!(raise_fd_limit().unwrap(), l.rlim_max);
        assert_eq!(get().rlim_cur, l.rlim_max);
    }
}
