//! What PID 1 owes the system before anything else: the API filesystems, stdio on the
//! console, reaping orphans, and a way out that never returns (a PID 1 that exits panics
//! the kernel).

pub mod console;
pub mod failure;
pub mod mounts;
pub mod reaper;
