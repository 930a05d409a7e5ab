//! Where the streaming time went. Each pipeline stage counts the wall time it spent on its
//! own work — not waiting for its neighbours — and its thread's CPU time. The stages
//! overlap, so each is a share of the stream's wall time, and the busiest one is what
//! limits the stream: the network (download), the disk (writes and BLKZEROOUT) or a CPU
//! stage (decompression, sha256). Reported in the `image-verified` event and the log.

use std::time::{Duration, Instant};

/// One stage: wall time in its own work, and its thread's CPU time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTime {
    pub busy: Duration,
    pub cpu: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Reading the download (waiting for the network, HTTP and TLS work).
    pub download: StageTime,
    /// sha256 of the stream the metadata names.
    pub hash: StageTime,
    /// Decompression (CPU only: its waits for input happen inside the decoder).
    pub decode: StageTime,
    /// Writes and BLKZEROOUT (waiting for the disk), and finding zero runs.
    pub sink: StageTime,
}

impl Timings {
    /// `network 12%, disk 85%, decompress 40%, sha256 15% of 4.2 s; CPU 2.3 s`: each
    /// stage's busy time as a share of the stream's wall time.
    pub fn describe(&self, wall: Duration) -> String {
        let wall_s = wall.as_secs_f64().max(1e-6);
        let pct = |d: Duration| (d.as_secs_f64() / wall_s * 100.0).round();
        let cpu = self.download.cpu + self.hash.cpu + self.decode.cpu + self.sink.cpu;
        format!(
            "network {:.0}%, disk {:.0}%, decompress {:.0}%, sha256 {:.0}% of {:.1} s; CPU {:.1} s",
            pct(self.download.busy),
            pct(self.sink.busy),
            pct(self.decode.busy),
            pct(self.hash.busy),
            wall_s,
            cpu.as_secs_f64()
        )
    }
}

/// Counts a stage's busy time on its own thread.
pub struct Busy {
    cpu_at_start: Duration,
    busy: Duration,
}

impl Busy {
    pub fn start() -> Busy {
        Busy { cpu_at_start: thread_cpu(), busy: Duration::ZERO }
    }

    /// Run `f`, counting its wall time as busy.
    pub fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let v = f();
        self.busy += t.elapsed();
        v
    }

    /// Busy time as counted, CPU time since [`Busy::start`].
    pub fn finish(self) -> StageTime {
        StageTime { busy: self.busy, cpu: thread_cpu().saturating_sub(self.cpu_at_start) }
    }

    /// For a pure CPU stage whose waits cannot be told apart: busy = CPU time.
    pub fn finish_cpu(self) -> StageTime {
        let cpu = thread_cpu().saturating_sub(self.cpu_at_start);
        StageTime { busy: cpu, cpu }
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_cpu_time_are_counted() {
        let mut b = Busy::start();
        b.time(|| std::thread::sleep(Duration::from_millis(30)));
        // Spin for 30 ms of this thread's CPU time, not of wall time: on a loaded machine the
        // thread may be preempted for most of a wall-clock interval.
        let spin = thread_cpu();
        let mut x = 0u64;
        while thread_cpu().saturating_sub(spin) < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let t = b.finish();
        assert!(t.busy >= Duration::from_millis(30), "{t:?}");
        assert!(t.cpu >= Duration::from_millis(30) && t.cpu < t.busy + Duration::from_millis(40), "{t:?}");
    }

    #[test]
    fn shares_of_the_wall_time() {
        let s = |ms| StageTime { busy: Duration::from_millis(ms), cpu: Duration::from_millis(ms / 2) };
        let t = Timings { download: s(500), hash: s(250), decode: s(1000), sink: s(1800) };
        assert_eq!(
            t.describe(Duration::from_secs(2)),
            "network 25%, disk 90%, decompress 50%, sha256 13% of 2.0 s; CPU 1.8 s"
        );
    }
}
