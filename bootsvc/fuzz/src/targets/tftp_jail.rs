//! Path resolution: a TFTP read request's file name through the TFTP jail, and the same
//! name through the HTTP file jail, against a tree with every kind of trap in it.
//!
//! Input: a TFTP RRQ (`00 01 name NUL mode NUL [opt NUL val NUL]…`) or, when it does not
//! start with the RRQ opcode, a bare name. The name is taken the way async-tftp takes it
//! (bytes up to the first NUL, UTF-8 or the request is dropped).
//!
//! Properties: whatever opens is a regular file inside the root (its device and inode are
//! one of the root's files), never the secret beside the root, and its reported size is its
//! size; the names of the root's own files always open.
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bootsvc::jail::Jail;

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

/// The file name async-tftp would hand to the handler.
fn file_name(data: &[u8]) -> Option<&str> {
    let name = match data {
        [0, 1, rest @ ..] => rest,
        _ => data,
    };
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    std::str::from_utf8(&name[..end]).ok()
}

fn check_open(t: &Tree, what: &str, name: &str, opened: Option<(std::fs::File, u64)>) {
    let Some((f, size)) = opened else { return };
    let m = f.metadata().expect("fstat");
    assert!(m.is_file(), "{what} opened a non-file for {name:?}");
    assert_eq!(m.len(), size, "{what} size for {name:?}");
    assert!(t.inside.contains(&(m.dev(), m.ino())), "{what} opened a file outside the root for {name:?}");
}

pub fn run(data: &[u8]) {
    let t = tree();
    let Some(name) = file_name(data) else { return };
    let tftp = t.jail.open(Path::new(name)).ok();
    check_open(t, "TFTP jail", name, tftp);
    let http = bootsvc::http::files::jail(&t.root, name).ok();
    check_open(t, "HTTP jail", name, http);
    if t.good.contains(&name) {
        assert!(t.jail.open(Path::new(name)).is_ok(), "TFTP jail refused {name:?}");
        assert!(bootsvc::http::files::jail(&t.root, name).is_ok(), "HTTP jail refused {name:?}");
    }
}
