//! TFTP: request parsing, option negotiation and the OACK, packets during a transfer, and
//! path resolution — the requested name through the TFTP jail, and the same name through the
//! HTTP file jail, against a tree with every kind of trap in it.
//!
//! Input: byte 0 and 1 are the server's block size limit (high byte first), byte 2 its
//! window limit, then a packet as it arrives on port 69 (an RRQ/WRQ or anything else).
//!
//! Properties:
//! - a request that parses re-encodes to one that parses the same (mode lower-cased, option
//!   names lower-cased, the first of a repeated option kept);
//! - what is granted stays within the RFC ranges and the server's limits; the OACK names
//!   only options the client sent, with the granted values, and is sent exactly when
//!   something was granted;
//! - ACK indices land inside the window they are taken against, with the ACKed number;
//! - whatever a jail opens is a regular file inside the root (its device and inode are one
//!   of the root's files), never the secret beside the root, with its true size; the
//!   names of the root's own files always open; a hidden name (a component starting with
//!   `.`) opens through neither.
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bootsvc::jail::Jail;
use bootsvc::tftp::packet;

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    jail: Jail,
    /// (dev, ino) of every regular file under the root.
    inside: HashSet<(u64, u64)>,
    /// Names that must open.
    good: Vec<&'static str>,
}

fn tree() -> &'static Tree {
    static T: OnceLock<Tree> = OnceLock::new();
    T.get_or_init(|| {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        let w = |p: &Path, b: &[u8]| std::fs::write(p, b).expect("writing the tree");
        std::fs::create_dir_all(root.join("sub/deep")).expect("mkdir");
        w(&root.join("undionly.kpxe"), b"ipxe");
        w(&root.join("sub/ipxe.efi"), b"efi");
        w(&root.join("sub/deep/snp.efi"), b"snp");
        w(&root.join(".hidden"), b"hidden");
        w(&dir.path().join("secret"), b"SECRET");
        symlink("sub/ipxe.efi", root.join("inside")).expect("symlink");
        symlink("deep/../ipxe.efi", root.join("sub/around")).expect("symlink");
        symlink("../secret", root.join("escape-rel")).expect("symlink");
        symlink(dir.path().join("secret"), root.join("escape-abs")).expect("symlink");
        symlink("../..", root.join("sub/up")).expect("symlink");
        symlink("/", root.join("slash")).expect("symlink");
        symlink("/proc/self/root/etc/passwd", root.join("magic")).expect("symlink");
        symlink("loop", root.join("loop")).expect("symlink");
        symlink("sub", root.join("dirlink")).expect("symlink");
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("fifo");
        let mut inside = HashSet::new();
        for f in ["undionly.kpxe", "sub/ipxe.efi", "sub/deep/snp.efi", ".hidden"] {
            let m = std::fs::metadata(root.join(f)).expect("stat");
            inside.insert((m.dev(), m.ino()));
        }
        let jail = Jail::new(&root).expect("jail");
        let good = vec!["undionly.kpxe", "sub/ipxe.efi", "sub/deep/snp.efi", "inside", "dirlink/deep/snp.efi"];
        Tree { _dir: dir, root, jail, inside, good }
    })
}

/// The request re-encoded.
fn encode(r: &packet::Request) -> Vec<u8> {
    let mut p = if r.write { packet::WRQ } else { packet::RRQ }.to_be_bytes().to_vec();
    let mut put = |s: &str| {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    };
    put(&r.filename);
    put(&r.mode);
    for (k, v) in &r.options {
        put(k);
        put(v);
    }
    p
}

/// The OACK's (name, value) pairs.
fn oack_pairs(p: &[u8]) -> Vec<(String, String)> {
    assert_eq!(p[..2], packet::OACK.to_be_bytes(), "not an OACK");
    let fields: Vec<String> = p[2..].split(|b| *b == 0).map(|f| String::from_utf8_lossy(f).into_owned()).collect();
    assert_eq!(fields.last().map(String::as_str), Some(""), "OACK not NUL-terminated");
    fields[..fields.len() - 1].chunks(2).map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default())).collect()
}

fn protocol(limits: (u16, u16), pkt: &[u8]) -> Option<String> {
    let _ = packet::parse_from_client(pkt);
    if pkt.len() >= 8 {
        let ack = u16::from_be_bytes([pkt[0], pkt[1]]);
        let lowest = u64::from(u32::from_be_bytes([pkt[2], pkt[3], pkt[4], pkt[5]]));
        let highest = lowest + u64::from(u16::from_be_bytes([pkt[6], pkt[7]]) % 64);
        if let Some(i) = packet::ack_index(ack, lowest, highest) {
            assert!((lowest..=highest).contains(&i) && i as u16 == ack, "ack {ack} in [{lowest}, {highest}] → {i}");
        }
    }
    let r = packet::parse_request(pkt).ok()?;
    assert!(r.mode == "octet" || r.mode == "netascii", "mode {:?}", r.mode);
    let again = packet::parse_request(&encode(&r)).expect("a parsed request re-encodes");
    assert_eq!(again, r, "re-encoded request parses differently");
    let (blk_limit, win_limit) = limits;
    let size = pkt.len() as u64 * 1000;
    let g = packet::negotiate(&r.options, size, blk_limit, win_limit);
    assert!(g.blksize >= packet::MIN_BLKSIZE && g.blksize <= packet::MAX_BLKSIZE, "{g:?}");
    assert!(g.blksize == packet::DEFAULT_BLKSIZE || g.blksize <= blk_limit.max(packet::MIN_BLKSIZE), "{g:?}");
    assert!(g.windowsize >= 1 && g.windowsize <= win_limit.max(1), "{g:?}");
    let pairs = oack_pairs(&packet::oack(&r.options, &g));
    assert_eq!(!pairs.is_empty(), g.oack, "OACK sent iff something was granted: {g:?} {pairs:?}");
    for (k, v) in &pairs {
        assert!(r.options.iter().any(|(n, _)| n == k), "OACK names {k}, which the client did not send");
        let want = match k.as_str() {
            "blksize" => g.blksize.to_string(),
            "windowsize" => g.windowsize.to_string(),
            "tsize" => size.to_string(),
            other => panic!("OACK option {other}"),
        };
        assert_eq!(*v, want, "OACK {k}");
    }
    Some(r.filename)
}

fn check_open(t: &Tree, what: &str, name: &str, opened: Option<(std::fs::File, u64)>) {
    let Some((f, size)) = opened else { return };
    let m = f.metadata().expect("fstat");
    assert!(m.is_file(), "{what} opened a non-file for {name:?}");
    assert_eq!(m.len(), size, "{what} size for {name:?}");
    assert!(t.inside.contains(&(m.dev(), m.ino())), "{what} opened a file outside the root for {name:?}");
}

pub fn run(data: &[u8]) {
    let [b0, b1, w, pkt @ ..] = data else { return };
    let limits = (u16::from_be_bytes([*b0, *b1]), u16::from(*w));
    let Some(name) = protocol(limits, pkt) else { return };
    let name = name.as_str();
    let t = tree();
    let tftp = t.jail.open(Path::new(name)).ok();
    let http = bootsvc::http::files::jail(&t.root, name).ok();
    let hidden = !name.starts_with('/') && name.replace('\\', "/").split('/').any(|c| c.starts_with('.') && c != ".");
    if hidden {
        assert!(tftp.is_none() && http.is_none(), "a hidden name opened: {name:?}");
    }
    check_open(t, "TFTP jail", name, tftp);
    check_open(t, "HTTP jail", name, http);
    if t.good.contains(&name) {
        assert!(t.jail.open(Path::new(name)).is_ok(), "TFTP jail refused {name:?}");
        assert!(bootsvc::http::files::jail(&t.root, name).is_ok(), "HTTP jail refused {name:?}");
    }
}
