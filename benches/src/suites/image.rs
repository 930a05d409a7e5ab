//! TODO
use anyhow::Result;

use super::{Ctx, SuiteResult};

pub fn run(_ctx: &Ctx, _out: &mut SuiteResult) -> Result<()> {
    anyhow::bail!("not written yet")
}
