//! NVMe admin commands through the kernel's passthrough ioctl (`NVME_IOCTL_ADMIN_CMD` on
//! the namespace's block device, linux/nvme_ioctl.h): Identify (controller, namespace,
//! active namespace list), Format NVM with Secure Erase, Sanitize and its status log.
//! Field offsets are the NVM Express Base Specification's; the parsers are pure.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::choose::NvmeCaps;
use crate::io::aligned::AlignedBuf;

/// `struct nvme_passthru_cmd` (72 bytes).
#[repr(C)]
#[derive(Default)]
struct PassthruCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

nix::ioctl_none!(nvme_ioctl_id, b'N', 0x40);
nix::ioctl_readwrite!(nvme_ioctl_admin_cmd, b'N', 0x41, PassthruCmd);

const OP_GET_LOG_PAGE: u8 = 0x02;
const OP_IDENTIFY: u8 = 0x06;
const OP_FORMAT_NVM: u8 = 0x80;
const OP_SANITIZE: u8 = 0x84;
const LOG_SANITIZE_STATUS: u32 = 0x81;

/// A format or sanitize may take long on a large drive; the kernel aborts the command
/// after this.
const LONG_COMMAND_MS: u32 = 60 * 60 * 1000;

/// An NVMe namespace, open for admin commands.
pub struct Namespace<'a> {
    file: &'a File,
    pub nsid: u32,
}

impl<'a> Namespace<'a> {
    /// `Ok(None)`: `file` is not an NVMe namespace (the ioctl is not known to its driver).
    pub fn open(file: &'a File) -> Result<Option<Namespace<'a>>> {
        // SAFETY: NVME_IOCTL_ID takes no argument and returns the namespace id.
        match unsafe { nvme_ioctl_id(file.as_raw_fd()) } {
            Ok(id) if id > 0 => Ok(Some(Namespace { file, nsid: id as u32 })),
            Ok(_) | Err(nix::errno::Errno::ENOTTY | nix::errno::Errno::EINVAL) => Ok(None),
            Err(e) => Err(io::Error::from(e)).context("NVME_IOCTL_ID"),
        }
    }

    /// One admin command; `data`, when given, is the command's buffer (read into).
    fn admin(&self, what: &str, mut cmd: PassthruCmd, data: Option<&mut AlignedBuf>) -> Result<u32> {
        if let Some(buf) = data {
            cmd.addr = buf.as_mut_ptr() as u64;
            cmd.data_len = u32::try_from(buf.len()).context("buffer too large")?;
        }
        // SAFETY: `cmd` is a valid nvme_passthru_cmd; `addr`/`data_len` describe a live buffer
        // that outlives the call.
        let rc = unsafe { nvme_ioctl_admin_cmd(self.file.as_raw_fd(), &mut cmd) };
        match rc {
            Ok(0) => Ok(cmd.result),
            // A positive answer is the NVMe status field (status code type and code).
            Ok(status) => bail!("{what}: the controller answered status {status:#x} ({})", status_name(status as u32)),
            Err(e) => Err(io::Error::from(e)).with_context(|| format!("{what}: NVME_IOCTL_ADMIN_CMD")),
        }
    }

    fn identify(&self, cns: u32, nsid: u32) -> Result<AlignedBuf> {
        let mut buf = AlignedBuf::new(4096);
        buf.set_len(4096);
        let cmd = PassthruCmd { opcode: OP_IDENTIFY, nsid, cdw10: cns, ..Default::default() };
        self.admin(&format!("Identify (CNS {cns})"), cmd, Some(&mut buf))?;
        Ok(buf)
    }

    /// What the controller offers, and the namespace's format (for a Format that keeps it).
    pub fn caps(&self) -> Result<(NvmeCaps, NsFormat)> {
        let ctrl = self.identify(1, 0)?;
        let ns = self.identify(0, self.nsid)?;
        // The active namespace list; a controller that does not know CNS 2 (NVMe 1.0) is
        // counted as shared, which keeps its controller-wide commands off.
        let only = match self.identify(2, 0) {
            Ok(list) => active_namespaces(&list) == 1,
            Err(e) => {
                tracing::debug!("active namespace list: {e:#}");
                false
            }
        };
        Ok((controller_caps(&ctrl, only), NsFormat::parse(&ns)))
    }

    /// Format NVM with Secure Erase (`crypto`: cryptographic erase, else user data erase),
    /// keeping the namespace's LBA format and protection settings.
    pub fn format(&self, f: NsFormat, crypto: bool) -> Result<()> {
        let ses = if crypto { 2 } else { 1 };
        let cmd = PassthruCmd {
            opcode: OP_FORMAT_NVM,
            nsid: self.nsid,
            cdw10: f.cdw10(ses),
            timeout_ms: LONG_COMMAND_MS,
            ..Default::default()
        };
        self.admin(&format!("Format NVM (secure erase {ses}) of namespace {}", self.nsid), cmd, None).map(|_| ())
    }

    /// Sanitize (`crypto`: crypto erase, else block erase), then wait until the controller
    /// reports it done (up to `limit`).
    pub fn sanitize(&self, crypto: bool, limit: Duration) -> Result<()> {
        let sanact = if crypto { 4 } else { 2 };
        let cmd = PassthruCmd { opcode: OP_SANITIZE, cdw10: sanact, timeout_ms: LONG_COMMAND_MS, ..Default::default() };
        self.admin(&format!("Sanitize (action {sanact})"), cmd, None)?;
        let start = Instant::now();
        loop {
            let mut buf = AlignedBuf::new(4096);
            buf.set_len(512);
            // NUMDL: dwords to read, 0-based.
            let cmd = PassthruCmd {
                opcode: OP_GET_LOG_PAGE,
                nsid: 0xffff_ffff,
                cdw10: LOG_SANITIZE_STATUS | ((512 / 4 - 1) << 16),
                ..Default::default()
            };
            self.admin("Get Log Page (sanitize status)", cmd, Some(&mut buf))?;
            match sanitize_state(&buf) {
                SanitizeState::Done => return Ok(()),
                SanitizeState::Failed => bail!("the controller reports the sanitize failed"),
                SanitizeState::Running(p) if start.elapsed() < limit => {
                    tracing::info!("sanitize {:.0} %", f64::from(p) * 100.0 / 65536.0);
                    std::thread::sleep(Duration::from_secs(1));
                }
                SanitizeState::Running(_) => bail!("the sanitize did not finish within {} s", limit.as_secs()),
            }
        }
    }
}

/// Identify Controller (CNS 1) → what erases it offers.
pub fn controller_caps(id: &[u8], only_namespace: bool) -> NvmeCaps {
    let oacs = u16::from_le_bytes([id[256], id[257]]);
    let sanicap = u32::from_le_bytes([id[328], id[329], id[330], id[331]]);
    let fna = id[524];
    NvmeCaps {
        format: oacs & 0b10 != 0,
        format_crypto: fna & 0b100 != 0,
        format_all_namespaces: fna & 0b11 != 0,
        sanitize_crypto: sanicap & 0b1 != 0,
        sanitize_block: sanicap & 0b10 != 0,
        only_namespace,
    }
}

/// Identify Active Namespace ID list (CNS 2): how many ids it holds.
pub fn active_namespaces(list: &[u8]) -> usize {
    list.chunks_exact(4).take_while(|c| c != &[0, 0, 0, 0]).count()
}

/// The namespace's current format (Identify Namespace, CNS 0): FLBAS and DPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NsFormat {
    /// Index of the LBA format in use (FLBAS bits 3:0 and 6:5).
    pub lbaf: u8,
    /// Metadata at the end of the LBA (FLBAS bit 4).
    pub extended_metadata: bool,
    /// DPS bits 2:0 (protection type) and bit 3 (PI first).
    pub dps: u8,
}

impl NsFormat {
    pub fn parse(id: &[u8]) -> NsFormat {
        let flbas = id[26];
        NsFormat {
            lbaf: (flbas & 0x0f) | ((flbas >> 5) & 0b11) << 4,
            extended_metadata: flbas & 0x10 != 0,
            dps: id[29] & 0x0f,
        }
    }

    /// Format NVM's command dword 10 with Secure Erase Settings `ses`.
    pub fn cdw10(&self, ses: u32) -> u32 {
        let lbaf = u32::from(self.lbaf);
        (lbaf & 0x0f)
            | (u32::from(self.extended_metadata) << 4)
            | (u32::from(self.dps & 0b111) << 5)
            | (u32::from((self.dps >> 3) & 1) << 8)
            | ((ses & 0b111) << 9)
            | (((lbaf >> 4) & 0b11) << 12)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanitizeState {
    Done,
    Failed,
    /// Progress in 65536ths.
    Running(u16),
}

/// The Sanitize Status log page (0x81): SPROG and SSTAT.
pub fn sanitize_state(log: &[u8]) -> SanitizeState {
    let sprog = u16::from_le_bytes([log[0], log[1]]);
    match log[2] & 0b111 {
        // 1: completed; 4: completed without deallocation.
        1 | 4 => SanitizeState::Done,
        3 => SanitizeState::Failed,
        // 2: in progress; 0: never sanitized (the command not started yet).
        _ => SanitizeState::Running(sprog),
    }
}

/// The generic status codes an erase may meet, by name.
fn status_name(status: u32) -> &'static str {
    match status & 0x7ff {
        0x001 => "invalid command opcode",
        0x002 => "invalid field in command",
        0x00b => "invalid namespace or format",
        0x01d => "sanitize failed",
        0x01e => "sanitize in progress",
        0x10a => "invalid format",
        0x115 => "operation denied",
        0x11d => "sanitize prohibited while persistent memory region is enabled",
        _ => "see the NVMe specification",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthru_struct_is_the_kernels_size() {
        assert_eq!(std::mem::size_of::<PassthruCmd>(), 72);
    }

    #[test]
    fn identify_controller_fields() {
        let mut id = vec![0u8; 4096];
        assert_eq!(controller_caps(&id, true), NvmeCaps { only_namespace: true, ..Default::default() });
        id[256] = 0b10; // OACS: format
        id[328] = 0b11; // SANICAP: crypto + block
        id[524] = 0b101; // FNA: all namespaces, crypto
        let c = controller_caps(&id, false);
        assert!(c.format && c.format_crypto && c.format_all_namespaces && c.sanitize_crypto && c.sanitize_block);
        assert!(!c.only_namespace);
    }

    #[test]
    fn namespace_format_and_format_command() {
        let mut id = vec![0u8; 4096];
        id[26] = 0x01 | 0x10 | (0b01 << 5); // LBAF 1 + upper bits 01 → 17, extended metadata
        id[29] = 0b1010; // PI type 2, first
        let f = NsFormat::parse(&id);
        assert_eq!(f, NsFormat { lbaf: 17, extended_metadata: true, dps: 0b1010 });
        let cdw10 = f.cdw10(1);
        assert_eq!(cdw10 & 0xf, 1, "LBAF low");
        assert_eq!((cdw10 >> 4) & 1, 1, "MSET");
        assert_eq!((cdw10 >> 5) & 0b111, 2, "PI");
        assert_eq!((cdw10 >> 8) & 1, 1, "PIL");
        assert_eq!((cdw10 >> 9) & 0b111, 1, "SES: user data erase");
        assert_eq!((cdw10 >> 12) & 0b11, 1, "LBAF upper");
        assert_eq!(NsFormat::default().cdw10(2), 2 << 9, "plain format 0, crypto erase");
    }

    #[test]
    fn active_namespace_list_and_sanitize_log() {
        let mut list = vec![0u8; 4096];
        list[0] = 1;
        assert_eq!(active_namespaces(&list), 1);
        list[4] = 2;
        assert_eq!(active_namespaces(&list), 2);
        let mut log = vec![0u8; 512];
        log[0..2].copy_from_slice(&32768u16.to_le_bytes());
        log[2] = 2;
        assert_eq!(sanitize_state(&log), SanitizeState::Running(32768));
        log[2] = 1;
        assert_eq!(sanitize_state(&log), SanitizeState::Done);
        log[2] = 3;
        assert_eq!(sanitize_state(&log), SanitizeState::Failed);
    }
}
