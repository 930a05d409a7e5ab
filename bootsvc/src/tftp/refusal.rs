//! A refused read request as TFTP shows it: the jail's [`Refusal`] as the metrics label
//! (`osie_dropped_packets_total{reason=…}`) and as the ERROR packet the client gets.

use super::packet::{error, ErrorCode};
use crate::jail::Refusal;

/// The metrics label.
pub fn reason(r: &Refusal) -> &'static str {
    match r {
        Refusal::Traversal => "tftp-traversal",
        Refusal::Absolute => "tftp-absolute-path",
        Refusal::Hidden => "tftp-hidden",
        Refusal::SymlinkEscape => "tftp-symlink-escape",
        Refusal::NotFound | Refusal::Empty => "tftp-not-found",
        Refusal::NotAFile => "tftp-not-a-file",
        Refusal::Denied => "tftp-denied",
        Refusal::Io(_) => "tftp-io-error",
    }
}

/// The ERROR sent to the client: a name that is not served looks missing, escapes look like
/// "access violation", without saying more.
pub fn packet(r: &Refusal) -> Vec<u8> {
    match r {
        Refusal::NotFound | Refusal::Empty | Refusal::NotAFile | Refusal::Hidden => {
            error(ErrorCode::FileNotFound, "File not found")
        }
        Refusal::Io(_) => error(ErrorCode::NotDefined, "Cannot read the file"),
        Refusal::Traversal | Refusal::Absolute | Refusal::SymlinkEscape | Refusal::Denied => {
            error(ErrorCode::AccessViolation, "Access violation")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_packets() {
        // The labels operators' dashboards already use.
        assert_eq!(reason(&Refusal::Traversal), "tftp-traversal");
        assert_eq!(reason(&Refusal::Absolute), "tftp-absolute-path");
        assert_eq!(reason(&Refusal::SymlinkEscape), "tftp-symlink-escape");
        assert_eq!(reason(&Refusal::Empty), "tftp-not-found");
        assert_eq!(reason(&Refusal::Io("x".into())), "tftp-io-error");
        assert_eq!(reason(&Refusal::Hidden), "tftp-hidden");
        assert_eq!(packet(&Refusal::Hidden), b"\x00\x05\x00\x01File not found\x00");
        assert_eq!(packet(&Refusal::SymlinkEscape), b"\x00\x05\x00\x02Access violation\x00");
        assert_eq!(packet(&Refusal::Io("x".into()))[..4], [0, 5, 0, 0]);
    }
}
