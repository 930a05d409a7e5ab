//! Where the installed OS's boot option goes: which `Boot####` number it takes and the new
//! `BootOrder`, by policy. Pure: the firmware's options and order in, the decision out.

use std::fmt;

use super::loadopt::Parsed;

/// `BootOrder` policy for the installed OS's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// The network options stay first, the OS right after them: every boot asks bootsvc,
    /// whose one-shot rule decides (installer while netboot is allowed, else on to the disk).
    #[default]
    NetworkFirst,
    /// The OS first: it boots without touching the network; a reinstall then needs the
    /// BMC's one-time boot override (or the boot menu).
    DiskFirst,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::NetworkFirst => "network-first",
            Policy::DiskFirst => "disk-first",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The number for the entry whose path is `path` and description `description`: an
/// existing option with both (a reinstall writes over its own entry, never a second one),
/// else the lowest number no option has. `None` when all 65536 are taken.
pub fn number(existing: &[(u16, Parsed)], description: &str, path: &[u8]) -> Option<u16> {
    if let Some((n, _)) = existing.iter().find(|(_, p)| p.description == description && p.path == path) {
        return Some(*n);
    }
    (0..=u16::MAX).find(|n| !existing.iter().any(|(m, _)| m == n))
}

/// The new `BootOrder`: `ours` placed by `policy` among `current` (the firmware's order,
/// kept otherwise, duplicates of `ours` removed). `network` says which numbers are network
/// options (those not known are not).
pub fn boot_order(current: &[u16], ours: u16, policy: Policy, network: &dyn Fn(u16) -> bool) -> Vec<u16> {
    let rest: Vec<u16> = current.iter().copied().filter(|&n| n != ours).collect();
    let at = match policy {
        Policy::DiskFirst => 0,
        // After the leading network options (all of them, when they are not all in front:
        // the first non-network option is where booting the disk would start).
        Policy::NetworkFirst => rest.iter().take_while(|&&n| network(n)).count(),
    };
    let mut order = rest;
    order.insert(at, ours);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(description: &str, path: &[u8]) -> Parsed {
        Parsed { attributes: 1, description: description.into(), nodes: vec![], path: path.to_vec() }
    }

    #[test]
    fn a_reinstall_reuses_its_entry_else_the_lowest_free_number() {
        let existing =
            vec![(0, parsed("UiApp", b"a")), (1, parsed("UEFI PXEv4", b"b")), (3, parsed("debian", b"disk"))];
        assert_eq!(number(&existing, "debian", b"disk"), Some(3));
        // Same name on another disk or partition: a new entry.
        assert_eq!(number(&existing, "debian", b"other"), Some(2));
        assert_eq!(number(&[], "debian", b"disk"), Some(0));
    }

    #[test]
    fn network_first_keeps_the_network_in_front() {
        // OVMF's order after install: PXEv4 (1), HTTPv4 (2), the virtio disk's "Misc Device" (4), shell (0).
        let net = |n: u16| n == 1 || n == 2;
        assert_eq!(boot_order(&[1, 2, 4, 0], 5, Policy::NetworkFirst, &net), [1, 2, 5, 4, 0]);
        // Ours already in the order (a reinstall): moved, not doubled.
        assert_eq!(boot_order(&[1, 5, 2, 4, 0], 5, Policy::NetworkFirst, &net), [1, 2, 5, 4, 0]);
        // No network option in front: ours first.
        assert_eq!(boot_order(&[4, 1, 2], 5, Policy::NetworkFirst, &net), [5, 4, 1, 2]);
        assert_eq!(boot_order(&[], 5, Policy::NetworkFirst, &net), [5]);
    }

    #[test]
    fn disk_first_puts_the_os_in_front() {
        let net = |n: u16| n == 1 || n == 2;
        assert_eq!(boot_order(&[1, 2, 4, 0], 5, Policy::DiskFirst, &net), [5, 1, 2, 4, 0]);
        assert_eq!(boot_order(&[1, 2, 5, 4], 5, Policy::DiskFirst, &net), [5, 1, 2, 4]);
        assert_eq!(Policy::default(), Policy::NetworkFirst);
        assert_eq!(Policy::DiskFirst.to_string(), "disk-first");
    }
}
