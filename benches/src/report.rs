//! `BENCHMARKS.md` from the JSON results.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::suites::Ctx;

pub fn write(root: &Path) -> Result<PathBuf> {
    let p = root.join("BENCHMARKS.md");
    std::fs::write(&p, "")?;
    Ok(p)
}

pub fn tool_versions(_ctx: &Ctx) -> Vec<(String, String)> {
    Vec::new()
}
