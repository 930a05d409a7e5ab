//! Item 5, end to end: the QEMU provisioning timeline per phase (median of 3 machines) and
//! how the installer's image phase splits between disk, network and CPU.

use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::{Ctx, SuiteResult};

pub fn run(_ctx: &Ctx, _out: &mut SuiteResult) -> Result<()> {
    bail!("the end-to-end timeline needs the QEMU harness (qemu-tests on wip/e2e), not merged here yet")
}

pub fn render(s: &mut String, r: &SuiteResult) {
    let _ = writeln!(s, "## 5. End to end\n");
    for n in &r.notes {
        let _ = writeln!(s, "{n}\n");
    }
}
