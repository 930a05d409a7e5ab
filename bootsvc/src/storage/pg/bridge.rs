//! The bridge from [`Storage`](crate::storage::Storage)'s synchronous methods to the async
//! PostgreSQL client: a small tokio runtime of its own (two worker threads, named
//! `osie-pg`) drives the connections, and [`Bridge::run`] waits for one operation on the
//! calling thread.
//!
//! [`Bridge::run`] enters the runtime's context (so a new connection's socket and task
//! belong to it) and polls the future on the caller's thread with a minimal executor that
//! parks the thread between wake-ups. That works from any thread, including a blocking
//! thread of bootsvc's own runtime (`spawn_blocking`, `block_in_place`), without tokio's
//! "cannot block inside a runtime" panic; and the future may borrow from the caller (the
//! DHCP pool's `taken` check runs inside the allocating transaction). Every operation is
//! bounded by `database.timeout_secs`: a database that stops answering fails the call, it
//! does not hang the caller.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::config::database::redact;

pub struct Bridge {
    /// `Some` until dropped (see `Drop`).
    rt: Option<tokio::runtime::Runtime>,
    pub pool: Pool,
    pub pg: tokio_postgres::Config,
    /// The URL without its password, for messages.
    pub shown: String,
    pub timeout: Duration,
    /// Whether the last operation reached the database (see [`Unreachable`]).
    up: AtomicBool,
}

/// The database could not be reached or did not answer in time (no connection, refused,
/// cut, timed out), as opposed to answering with an error. Only this makes an instance
/// spool events and report the database down.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// Whether `e` (with any context added) is the database being unreachable.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Unreachable>().is_some()
}

impl Bridge {
    /// A runtime and a pool of at most `max` connections to `url`, made lazily (nothing is
    /// connected yet).
    pub fn new(url: &str, max: usize, timeout: Duration) -> Result<Bridge> {
        let shown = redact(url);
        let mut pg: tokio_postgres::Config =
            url.parse().map_err(|e| anyhow!("database URL {shown:?}: not usable: {e}"))?;
        pg.connect_timeout(timeout).application_name("bootsvc").keepalives_idle(Duration::from_secs(30));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("osie-pg")
            .enable_all()
            .build()
            .context("starting the database runtime")?;
        let manager =
            Manager::from_config(pg.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(max)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .context("creating the database connection pool")?;
        Ok(Bridge { rt: Some(rt), pool, pg, shown, timeout, up: AtomicBool::new(true) })
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        match &self.rt {
            Some(rt) => rt.handle(),
            None => unreachable!("the runtime is only taken when the bridge is dropped"),
        }
    }

    /// Run `fut` to completion on this thread (see the module docs), at most `timeout`.
    /// `what` names the operation in the error.
    pub fn run<T>(&self, what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        self.run_within(what, self.timeout, fut)
    }

    /// [`Bridge::run`] with a limit of its own (an import of thousands of records).
    pub fn run_within<T>(&self, what: &str, limit: Duration, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let _in = self.handle().enter();
        let r = block_on(async {
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => Err(Unreachable(format!("no answer from the database within {limit:?}")).into()),
            }
        });
        self.note(&r);
        r.with_context(|| format!("database: {what}"))
    }

    /// Remember whether an operation reached the database.
    pub fn note<T>(&self, r: &Result<T>) {
        let reached = !matches!(r, Err(e) if is_unreachable(e));
        if self.up.swap(reached, Ordering::Relaxed) != reached {
            match r {
                Err(e) => tracing::warn!("database {} unreachable: {e:#}", self.shown),
                Ok(_) => tracing::info!("database {} reachable again", self.shown),
            }
        }
    }

    /// Whether the last operation reached the database.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// A pooled connection, with an error that says where and why not.
    pub async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| Unreachable(format!("connecting to {}: {}", self.shown, pool_error(&e))).into())
    }
}

/// What went wrong getting a connection, in words an operator can act on.
pub fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => describe(e),
        PoolError::Timeout(t) => format!("timed out ({t:?})"),
        other => other.to_string(),
    }
}

/// A client error as one line: the server's own message for database errors (wrong
/// password, no such database), the cause for connection errors.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(&format!(": {x}"));
        src = x.source();
    }
    s
}

/// `describe` as an `anyhow` error with context.
/// Whether the server answered `e` about the request itself. A connection error, and the
/// server's own errors about its availability (class 08 connection exceptions, 57P01–57P03
/// shutting down or not yet accepting, 53300 too many connections), are outages.
fn answered(e: &tokio_postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else { return false };
    let code = db.code().code();
    !(code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300"))
}

/// An error the server answered with stays a plain error; a lost or failed connection is
/// [`Unreachable`].
pub fn db_err(what: &'static str) -> impl Fn(tokio_postgres::Error) -> anyhow::Error {
    move |e| {
        let msg = format!("{what}: {}", describe(&e));
        if answered(&e) {
            anyhow!(msg)
        } else {
            Unreachable(msg).into()
        }
    }
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Poll `fut` on this thread until it is ready, parking between wake-ups.
/// The last user may let go of the bridge on one of bootsvc's async threads (at shutdown):
/// dropping a runtime there panics, so its threads are left to stop on their own.
impl Drop for Bridge {
    fn drop(&mut self) {
        self.pool.close();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        // A wake-up before this park makes it return at once; a spurious one polls again.
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_futures_from_any_thread_and_bounds_them() {
        let b = Bridge::new("postgresql://osie@%2Fnonexistent/osie", 1, Duration::from_millis(300)).unwrap();
        assert_eq!(b.run("sleeping", async { Ok(7) }).unwrap(), 7);
        let e = b.run("waiting", async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        });
        let e = format!("{:#}", e.unwrap_err());
        assert!(e.starts_with("database: waiting: no answer from the database within 300ms"), "{e}");
        // From inside another runtime's blocking section: no panic, same answer.
        let outer = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let b = Arc::new(b);
        let b2 = Arc::clone(&b);
        let got = outer.block_on(async move {
            tokio::task::spawn_blocking(move || b2.run("from a blocking thread", async { Ok(1) })).await.unwrap()
        });
        assert_eq!(got.unwrap(), 1);
        // Nothing listens there: the error names the server and why.
        let e = format!("{:#}", b.run("connecting", async { b.client().await.map(|_| ()) }).unwrap_err());
        assert!(e.contains("connecting to postgresql://osie@%2Fnonexistent/osie"), "{e}");
    }
}
