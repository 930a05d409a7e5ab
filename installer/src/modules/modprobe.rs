//! The installer as the kernel's `modprobe`: when a mount needs `fs-ext4` or a crypto user
//! needs `crypto-crc32c`, the kernel runs `/sbin/modprobe -q -- <name>` (a symlink to
//! `/init` in the initramfs). Loading such modules on demand instead of up front saves
//! seconds per boot (xfs and btrfs alone take ~6 s under TCG).

use std::path::Path;

use super::Loader;

/// If this process was started as `modprobe`, do that job and return the exit code.
pub fn dispatch() -> Option<i32> {
    let mut args = std::env::args_os();
    let argv0 = args.next()?;
    if Path::new(&argv0).file_name()? != "modprobe" {
        return None;
    }
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    Some(run(&args))
}

/// `modprobe [-q] [--] <name-or-alias> [params…]`: 0 when the module is now loaded.
pub fn run(args: &[String]) -> i32 {
    let Some(name) = target(args) else {
        eprintln!("modprobe (osie): usage: modprobe [-q] [--] <module or alias>");
        return 1;
    };
    let mut loader = match Loader::for_running_kernel() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("modprobe (osie): {e:#}");
            return 1;
        }
    };
    let candidates = loader.index().lookup(name);
    loader.load_alias(name);
    if candidates.iter().any(|c| loader.is_loaded(c)) {
        0
    } else {
        1
    }
}

/// The module argument: the first word that is not an option (everything after `--` is).
pub fn target(args: &[String]) -> Option<&str> {
    let mut after_dashes = false;
    for a in args {
        if !after_dashes && a == "--" {
            after_dashes = true;
        } else if after_dashes || !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_the_module_argument_as_the_kernel_passes_it() {
        assert_eq!(target(&v(&["-q", "--", "fs-ext4"])), Some("fs-ext4"));
        assert_eq!(target(&v(&["crypto-crc32c"])), Some("crypto-crc32c"));
        assert_eq!(target(&v(&["--", "-odd"])), Some("-odd"));
        assert_eq!(target(&v(&["-q", "--"])), None);
    }
}
