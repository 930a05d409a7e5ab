//! `/etc/resolv.conf` from the lease (or `osie.ip=`): musl's resolver, and so the HTTP
//! client, reads it for every lookup of bootsvc's or the image server's name.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};

pub fn render(dns: &[Ipv4Addr], domain: Option<&str>) -> String {
    let mut s = String::from("# written by osie's installer\n");
    if let Some(d) = domain {
        s.push_str(&format!("search {d}\n"));
    }
    // musl uses at most three servers, like glibc.
    for d in dns.iter().take(3) {
        s.push_str(&format!("nameserver {d}\n"));
    }
    s
}

pub fn write(path: &Path, dns: &[Ipv4Addr], domain: Option<&str>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, render(dns, domain)).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_search_and_at_most_three_servers() {
        let dns: Vec<Ipv4Addr> = (1..=4).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
        let s = render(&dns, Some("osie.test"));
        assert_eq!(
            s,
            "# written by osie's installer\nsearch osie.test\nnameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\n"
        );
        assert_eq!(render(&[], None), "# written by osie's installer\n");
    }
}
