//! `gpg` (Debian package gnupg) in a temporary home: real OpenPGP keys and signatures for the
//! tests of vendor checksums files (bootsvc's unit tests, the installer's end-to-end test).

use std::path::PathBuf;
use std::process::Command;

/// A temporary GnuPG home; removed on drop.
pub struct Gpg {
    dir: tempfile::TempDir,
}

impl Gpg {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Gpg {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("gnupg");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Gpg { dir }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("gnupg")
    }

    pub fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home())
            .args(["--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .expect("running gpg (Debian package gnupg)");
        assert!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// A detached signature of `text` by `who` (`extra` goes first, e.g. a faked time).
    pub fn sign(&self, text: &[u8], who: &str, armor: bool, extra: &[&str]) -> Vec<u8> {
        let f = self.dir.path().join("to-sign");
        std::fs::write(&f, text).unwrap();
        let mut args: Vec<&str> = extra.to_vec();
        if armor {
            args.push("--armor");
        }
        args.extend(["--local-user", who, "--output", "-", "--detach-sign", f.to_str().unwrap()]);
        self.run(&args)
    }

    /// The key's fingerprint.
    pub fn fpr(&self, who: &str) -> String {
        let out = String::from_utf8(self.run(&["--with-colons", "--list-keys", who])).unwrap();
        let line = out.lines().find(|l| l.starts_with("fpr:")).unwrap();
        line.split(':').nth(9).unwrap().to_string()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn export(&self, who: &str) -> Vec<u8> {
        self.run(&["--armor", "--export", who])
    }

    /// Import the revocation certificate gpg wrote when it made `who`'s key.
    pub fn revoke(&self, who: &str) {
        let fpr = self.fpr(who);
        let rev = self.home().join("openpgp-revocs.d").join(format!("{fpr}.rev"));
        // gpg writes it with the armor line escaped (":-----BEGIN") so that it is not
        // imported by accident.
        let text = std::fs::read_to_string(&rev).unwrap().replace(":-----BEGIN", "-----BEGIN");
        let f = self.path("revocation.asc");
        std::fs::write(&f, text).unwrap();
        self.run(&["--import", f.to_str().unwrap()]);
    }
}
