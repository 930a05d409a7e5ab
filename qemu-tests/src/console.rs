//! A machine's serial console, as QEMU writes it to a file: read as text with terminal
//! escapes and carriage returns removed (firmware and iPXE draw with them), and summarised
//! for failure messages.

use std::path::Path;

/// The console so far, as plain text.
pub fn read(path: &Path) -> String {
    let raw = std::fs::read(path).unwrap_or_default();
    plain(&String::from_utf8_lossy(&raw))
}

/// Remove CSI escape sequences (`ESC [ … final`), other two-byte escapes and `\r`.
pub fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                } else if matches!(chars.next(), Some('(' | ')')) {
                    // Character set designation: ESC ( B.
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The last `n` non-empty lines.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Lines that tell how far a boot came, from firmware to the installed OS.
const MILESTONES: [&str; 16] = [
    "iPXE ",
    "Booting from",
    "Start PXE over IPv4",
    "Start HTTP Boot over IPv4",
    "Downloading NBP file",
    "BdsDxe",
    "Boot failed",
    "No bootable device",
    "Linux version",
    "osie:",
    "Booting `",
    "Welcome to",
    "Reached target",
    "Cloud-init v.",
    "login:",
    "osie-e2e",
];

/// The last console line that says where the boot is, for "how far did it come".
pub fn last_milestone(text: &str) -> Option<String> {
    text.lines().rev().find(|l| MILESTONES.iter().any(|m| l.contains(m))).map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_escapes() {
        let s = "\u{1b}[2J\u{1b}[01;01HiPXE 1.21\r\n\u{1b}(Bnet0: ok\u{1b}[0m\r\n";
        assert_eq!(plain(s), "iPXE 1.21\nnet0: ok\n");
    }

    #[test]
    fn tails_and_milestones() {
        let text = "SeaBIOS\nBooting from ROM...\niPXE 1.21 -- Open Source\n\nnet0: 192.0.2.21\nother\n";
        assert_eq!(tail(text, 2), "net0: 192.0.2.21\nother");
        assert_eq!(last_milestone(text).as_deref(), Some("iPXE 1.21 -- Open Source"));
        assert_eq!(last_milestone("nothing here"), None);
    }
}
