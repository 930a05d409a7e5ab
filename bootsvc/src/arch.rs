//! A machine's architecture, and where its files sit under bootsvc's paths. Shared by the
//! inventory (a record's `arch`), DHCP (which architecture a request names) and the iPXE and
//! GRUB decisions (`bootsvc/docs/arm64.md`); imports nothing of the crate.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    #[default]
    X86_64,
    Aarch64,
}

impl Arch {
    /// Where this architecture's files sit under bootsvc's paths (`boot/`, `artifacts/`,
    /// over HTTP and TFTP): x86_64 keeps the paths it had before there was another
    /// architecture, aarch64's are under `arm64/` (Debian's name; `bootsvc/docs/arm64.md`).
    pub fn subdir(self) -> &'static str {
        match self {
            Arch::X86_64 => "",
            Arch::Aarch64 => "arm64/",
        }
    }

    /// A path under one of those directories read back: its architecture and the rest.
    pub fn split_path(path: &str) -> (Arch, &str) {
        match path.strip_prefix(Arch::Aarch64.subdir()) {
            Some(rest) => (Arch::Aarch64, rest),
            None => (Arch::X86_64, path),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}
