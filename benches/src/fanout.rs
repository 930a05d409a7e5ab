//! Many clients at once, each doing its transfers one after another: the shape of the TFTP
//! and HTTP loads (and of a rack booting). Aggregate throughput and per-transfer latency.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::stats::Latency;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanoutReport {
    pub clients: usize,
    pub transfers: u64,
    pub failed: u64,
    /// Payload bytes received by all clients.
    pub bytes: u64,
    /// First start → last end.
    pub seconds: f64,
    /// Aggregate, 10⁶ bytes per second.
    pub mb_per_sec: f64,
    /// Per transfer.
    pub latency: Latency,
    /// The first few failures, for the log.
    pub errors: Vec<String>,
}

/// Start `clients` tasks at once; client `c` calls `transfer(c)` `each` times in a row.
/// `transfer` returns the bytes it received.
pub async fn run<F, Fut>(clients: usize, each: usize, transfer: F) -> FanoutReport
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send + 'static,
{
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let f = transfer.clone();
        set.spawn(async move {
            let mut out: Vec<(Duration, anyhow::Result<u64>)> = Vec::with_capacity(each);
            for _ in 0..each {
                let t = Instant::now();
                let r = f(c).await;
                out.push((t.elapsed(), r));
            }
            out
        });
    }
    let mut report = FanoutReport { clients, ..FanoutReport::default() };
    let mut lat = Vec::new();
    while let Some(r) = set.join_next().await {
        let Ok(results) = r else {
            report.failed += each as u64;
            continue;
        };
        for (d, r) in results {
            report.transfers += 1;
            match r {
                Ok(b) => {
                    report.bytes += b;
                    lat.push(d);
                }
                Err(e) => {
                    report.failed += 1;
                    if report.errors.len() < 5 {
                        report.errors.push(format!("{e:#}"));
                    }
                }
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.mb_per_sec = report.bytes as f64 / report.seconds / 1e6;
    report.latency = Latency::of(&mut lat);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_bytes_and_failures() {
        let r = run(4, 3, |c| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if c == 3 {
                anyhow::bail!("client 3 fails")
            }
            Ok(1000)
        })
        .await;
        assert_eq!((r.clients, r.transfers, r.failed, r.bytes), (4, 12, 3, 9000));
        assert_eq!(r.latency.count, 9);
        assert_eq!(r.errors.len(), 3);
        assert!(r.seconds >= 0.015);
    }
}
