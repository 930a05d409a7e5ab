//! The PID-1 reaper with this test process standing in for PID 1: as a child subreaper it
//! inherits orphans the way init does. Its own binary, because the reaper thread watches
//! every child of the process.

use std::process::Command;
use std::time::Duration;

use installer::pid1::reaper;

/// States of this process's children, from /proc (`Z` = zombie).
fn child_states() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == me {
            out.push((pid, state));
        }
    }
    out
}

#[test]
fn orphans_are_reaped_and_owned_children_keep_their_status() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes who inherits our orphans.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
    reaper::spawn();

    // A shell that leaves an orphan behind: it is re-parented to us and exits at once.
    let st = Command::new("sh").args(["-c", "(sleep 0.2 &) ; exit 0"]).status().unwrap();
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(500));
    let zombies_seen = child_states().into_iter().filter(|(_, s)| *s == 'Z').count();
    // Within the grace period plus a margin, the orphan zombie is gone.
    std::thread::sleep(reaper::GRACE + Duration::from_secs(2));
    let left: Vec<_> = child_states().into_iter().filter(|(_, s)| *s == 'Z').collect();
    assert!(left.is_empty(), "zombies left: {left:?} (seen {zombies_seen} before the grace period)");

    // A child whose owner waits for it (std::process) still gets its own exit status.
    let mut c = Command::new("sh").args(["-c", "sleep 0.3; exit 7"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(c.wait().unwrap().code(), Some(7), "the reaper must not steal a waited-for child's status");
}
