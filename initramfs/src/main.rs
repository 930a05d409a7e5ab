//! `mkinitramfs`: build osie's initramfs. See the crate docs and README.md.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use osie_initramfs::compress::{Compression, ModuleCompression};
use osie_initramfs::image::{self, Options, DEFAULT_MODULES};

#[derive(Parser)]
#[command(about = "Build osie's initramfs: the static installer as /init plus the kernel modules it needs")]
struct Args {
    /// The unpacked kernel package (holding lib/modules/<release>/).
    #[arg(long, default_value = "build/kernel/root")]
    kernel_root: PathBuf,
    /// Kernel release; needed only when the package holds several.
    #[arg(long)]
    release: Option<String>,
    /// The static installer binary, shipped as /init.
    #[arg(long)]
    init: PathBuf,
    /// Where to write the initramfs.
    #[arg(long, short)]
    output: PathBuf,
    /// Modules to include with their dependencies (repeat or comma-separate); default: the
    /// storage, network and filesystem drivers listed in image.rs.
    #[arg(long = "module", value_delimiter = ',')]
    modules: Vec<String>,
    #[arg(long, value_enum, default_value = "zstd")]
    compression: Compression,
    /// Compression level (zstd 1-19, gzip 1-9).
    #[arg(long)]
    level: Option<i32>,
    /// Store each module compressed (as distributions ship them); default: plain, the whole
    /// archive being compressed anyway.
    #[arg(long, value_enum, default_value = "none")]
    module_compression: ModuleCompression,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    let args = Args::parse();
    let modules =
        if args.modules.is_empty() { DEFAULT_MODULES.iter().map(|s| s.to_string()).collect() } else { args.modules };
    let built = image::build(&Options {
        kernel_root: args.kernel_root,
        release: args.release,
        init: args.init,
        modules,
        compression: args.compression,
        level: args.level,
        module_compression: args.module_compression,
    })?;
    // Write beside the target and rename: readers never see half an image, and concurrent
    // builds (tests calling scripts/build in parallel) do not share a temporary file.
    let mut tmp = args.output.clone().into_os_string();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, &built.image).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.output).with_context(|| format!("renaming to {}", args.output.display()))?;
    // A summary on stdout (scripts/build keeps it beside the image).
    println!("release {}", built.release);
    println!(
        "cpio {} bytes, {} {} bytes",
        built.cpio_len,
        format!("{:?}", args.compression).to_lowercase(),
        built.image.len()
    );
    for (name, m) in &built.selection.modules {
        println!("module {name} {} {}", m.bytes.len(), m.path);
    }
    for b in &built.selection.builtin {
        println!("builtin {b}");
    }
    for m in &built.selection.missing {
        println!("absent {m}");
        tracing::warn!(module = %m, "asked for but not in this kernel");
    }
    Ok(())
}
