//! Block-device ioctls (linux/fs.h), with the fallbacks a regular file needs so the same
//! code runs against image files in tests.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc::c_int);
nix::ioctl_read_bad!(blkpbszget, nix::request_code_none!(0x12, 123), libc::c_uint);
nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
nix::ioctl_write_ptr_bad!(blkdiscard, nix::request_code_none!(0x12, 119), [u64; 2]);
nix::ioctl_none!(blkrrpart, 0x12, 95);
nix::ioctl_none!(blkflsbuf, 0x12, 97);

pub fn is_block_device(f: &File) -> io::Result<bool> {
    Ok(f.metadata()?.file_type().is_block_device())
}

/// Size in bytes: BLKGETSIZE64 for a block device, the length for a file.
pub fn size(f: &File) -> io::Result<u64> {
    if !is_block_device(f)? {
        return Ok(f.metadata()?.len());
    }
    let mut n = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    unsafe { blkgetsize64(f.as_raw_fd(), &mut n) }.map_err(io::Error::from)?;
    Ok(n)
}

/// Logical sector size (512 for files).
pub fn logical_sector_size(f: &File) -> io::Result<u32> {
    if !is_block_device(f)? {
        return Ok(512);
    }
    let mut n: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer.
    unsafe { blksszget(f.as_raw_fd(), &mut n) }.map_err(io::Error::from)?;
    u32::try_from(n).map_err(|_| io::Error::other(format!("BLKSSZGET returned {n}")))
}

/// Physical sector size (the logical one when unknown).
pub fn physical_sector_size(f: &File) -> io::Result<u32> {
    if !is_block_device(f)? {
        return Ok(512);
    }
    let mut n: libc::c_uint = 0;
    // SAFETY: BLKPBSZGET writes one unsigned int through the pointer.
    unsafe { blkpbszget(f.as_raw_fd(), &mut n) }.map_err(io::Error::from)?;
    Ok(n)
}

/// Zero `len` bytes at `off` with BLKZEROOUT. `Ok(false)` when the file or device cannot do
/// it (a regular file, an old driver): the caller writes zeros instead.
pub fn zeroout(f: &File, off: u64, len: u64) -> io::Result<bool> {
    // SAFETY: BLKZEROOUT reads two u64 (offset, length) through the pointer.
    match unsafe { blkzeroout(f.as_raw_fd(), &[off, len]) } {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::ENOTTY | nix::errno::Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Discard (TRIM) a range; `Ok(false)` when unsupported.
pub fn discard(f: &File, off: u64, len: u64) -> io::Result<bool> {
    // SAFETY: BLKDISCARD reads two u64 (offset, length) through the pointer.
    match unsafe { blkdiscard(f.as_raw_fd(), &[off, len]) } {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::ENOTTY | nix::errno::Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Write out and drop the device's page cache (BLKFLSBUF): after a command that changed
/// the disk behind the kernel's back (an NVMe format), cached blocks are stale. No-op for
/// files.
pub fn flush_buffers(f: &File) -> io::Result<()> {
    if !is_block_device(f)? {
        return Ok(());
    }
    // SAFETY: BLKFLSBUF takes no argument.
    unsafe { blkflsbuf(f.as_raw_fd()) }.map(|_| ()).map_err(io::Error::from)
}

/// Ask the kernel to re-read the partition table. A disk whose partitions are in use
/// answers EBUSY for a moment after writes (udev probing): retry a few times. No-op for files.
pub fn reread_partitions(f: &File) -> io::Result<()> {
    if !is_block_device(f)? {
        return Ok(());
    }
    let mut tries = 0;
    loop {
        // SAFETY: BLKRRPART takes no argument.
        match unsafe { blkrrpart(f.as_raw_fd()) } {
            Ok(_) => return Ok(()),
            // A disk without partition support (a loop device without partscan) has no table to re-read.
            Err(nix::errno::Errno::EINVAL) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) if tries < 10 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100 * tries));
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// `struct blkpg_partition` (linux/blkpg.h).
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);
const BLKPG_ADD_PARTITION: libc::c_int = 1;

/// Tell the kernel about one partition (what `partx -a` does). Used when BLKRRPART did not
/// make the kernel list a partition the table has: some kernels and sandboxes do not scan.
pub fn add_partition(f: &File, number: u32, start: u64, len: u64) -> io::Result<()> {
    let mut p = BlkpgPartition {
        start: start as libc::c_longlong,
        length: len as libc::c_longlong,
        pno: number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_ADD_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&raw mut p).cast(),
    };
    // SAFETY: arg points at a valid blkpg_partition that outlives the call.
    match unsafe { blkpg(f.as_raw_fd(), &arg) } {
        Ok(_) | Err(nix::errno::Errno::EBUSY) => Ok(()), // EBUSY: it is already there
        Err(e) => Err(io::Error::from(e)),
    }
}
