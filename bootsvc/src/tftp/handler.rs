//! async-tftp's `Handler`: read requests go through the [`Jail`], write requests are
//! refused, and every transfer is counted and logged when it ends.
//!
//! `read_req_open` runs under async-tftp's handler lock, so it only opens a file (one
//! `openat2` and one `fstat`) and never reads it; the reading happens on `blocking`'s
//! thread pool as the transfer asks for blocks.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_tftp::packet;
use blocking::Unblock;
use futures_lite::AsyncRead;
use tracing::{info, warn};

use crate::jail::Jail;
use crate::metrics::Metrics;

pub struct Handler {
    pub jail: Arc<Jail>,
    pub metrics: Arc<Metrics>,
}

impl async_tftp::server::Handler for Handler {
    type Reader = Transfer;
    type Writer = futures_lite::io::Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Transfer, Option<u64>), packet::Error> {
        match self.jail.open(path) {
            Ok((file, size)) => {
                info!(client = %client, file = %path.display(), size, "TFTP read request: sending");
                Ok((Transfer::new(file, size, *client, path, self.metrics.clone()), Some(size)))
            }
            Err(r) => {
                self.metrics.drop_reason(r.reason());
                self.metrics.tftp_transfer("refused");
                warn!(client = %client, file = %path.display(), reason = r.reason(), "TFTP read request refused: {r}");
                Err(r.packet_error())
            }
        }
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        self.metrics.drop_reason("tftp-write");
        self.metrics.tftp_transfer("refused");
        warn!(client = %client, file = %path.display(), reason = "tftp-write", "TFTP write request refused: read-only server");
        Err(packet::Error::IllegalOperation)
    }
}

/// One file being sent. async-tftp drops it when the transfer ends, whichever way: then
/// the in-flight gauge goes down and the outcome is counted — `complete` when the whole
/// file was read and sent, `aborted` otherwise (the client gave up, or stopped answering
/// and the retries ran out).
pub struct Transfer {
    file: Unblock<File>,
    size: u64,
    sent: u64,
    client: SocketAddr,
    name: String,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl Transfer {
    fn new(file: File, size: u64, client: SocketAddr, name: &Path, metrics: Arc<Metrics>) -> Transfer {
        metrics.tftp_in_flight.inc();
        Transfer {
            // 64 KiB reads: a few blocks per hop to the thread pool.
            file: Unblock::with_capacity(64 * 1024, file),
            size,
            sent: 0,
            client,
            name: name.display().to_string(),
            started: Instant::now(),
            metrics,
        }
    }
}

impl AsyncRead for Transfer {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.file).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.sent += *n as u64;
            this.metrics.tftp_bytes.inc_by(*n as u64);
        }
        r
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.metrics.tftp_in_flight.dec();
        let outcome = if self.sent >= self.size { "complete" } else { "aborted" };
        self.metrics.tftp_transfer(outcome);
        let secs = self.started.elapsed().as_secs_f64();
        info!(
            client = %self.client, file = %self.name, bytes = self.sent, size = self.size, secs, outcome,
            "TFTP transfer {outcome}: {} bytes of {} in {secs:.2} s", self.sent, self.size
        );
    }
}
