//! Machines booting at once, each on its own timeline as firmware and iPXE would go:
//! DHCP (DISCOVER → ACK), then the boot file over TFTP (when DHCP named a file rather than
//! a URL), then HTTP downloads (the iPXE script, kernel, initramfs…), from the machine's
//! leased address if asked. `window` machines are in flight at any time; the report gives
//! per-phase latencies and the failures.
//!
//! The load test "500 machines boot at once" is this with 500 identities and a window of
//! 500. Addresses: when `from_lease` is set, the caller must have put every leased address
//! on the client interface (as /32s) so the sockets can bind to them. Without it every
//! machine fetches from the one client address, and bootsvc serves at most
//! `tftp.max_transfers_per_client` TFTP transfers at once to one address.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use osie_testkit::dhcp::{packet, DhcpClient, Identity, Lease};
use osie_testkit::tftp::{self, FetchOptions};
use serde::{Deserialize, Serialize};

use crate::stats::Latency;

#[derive(Debug, Clone)]
pub struct StormSpec {
    pub machines: Vec<Identity>,
    /// Machines booting at the same time.
    pub window: usize,
    /// Fetch the DHCP boot file over TFTP (from `siaddr`) with these options; `None`: skip.
    pub tftp: Option<FetchOptions>,
    /// HTTP server and paths to GET after TFTP; `{mac}` becomes the machine's MAC
    /// (`aa:bb:…`). A boot file that is an `http://` URL is fetched first, instead of TFTP.
    pub http_server: Option<SocketAddrV4>,
    pub http_paths: Vec<String>,
    /// Send TFTP and HTTP from the leased address (as the machine would).
    pub from_lease: bool,
    pub http_timeout: Duration,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StormReport {
    pub machines: usize,
    pub booted: usize,
    pub failed: usize,
    /// First power-on → last machine done.
    pub seconds: f64,
    pub dhcp: Latency,
    pub tftp: Latency,
    pub http: Latency,
    /// Each machine from its DISCOVER to its last HTTP byte.
    pub total: Latency,
    pub tftp_bytes: u64,
    pub http_bytes: u64,
    /// The first failures, `mac: phase: error`.
    pub errors: Vec<String>,
}

struct Booted {
    dhcp: Duration,
    tftp: Option<Duration>,
    http: Vec<Duration>,
    tftp_bytes: u64,
    http_bytes: u64,
    total: Duration,
}

/// Boot every machine; see the module doc.
pub async fn run(client: Arc<DhcpClient>, spec: StormSpec) -> StormReport {
    let start = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(spec.window.max(1)));
    let spec = Arc::new(spec);
    let mut set = tokio::task::JoinSet::new();
    for id in spec.machines.clone() {
        let (client, spec, permits) = (client.clone(), spec.clone(), permits.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let mac = packet::mac_string(&id.mac);
            boot(&client, &spec, &id).await.map_err(|e| format!("{mac}: {e}"))
        });
    }
    let mut r = StormReport { machines: spec.machines.len(), ..StormReport::default() };
    let (mut dhcp, mut tftp, mut http, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    while let Some(j) = set.join_next().await {
        match j {
            Ok(Ok(b)) => {
                r.booted += 1;
                dhcp.push(b.dhcp);
                tftp.extend(b.tftp);
                http.extend(b.http);
                total.push(b.total);
                r.tftp_bytes += b.tftp_bytes;
                r.http_bytes += b.http_bytes;
            }
            Ok(Err(e)) => {
                r.failed += 1;
                if r.errors.len() < 10 {
                    r.errors.push(e);
                }
            }
            Err(e) => {
                r.failed += 1;
                r.errors.push(format!("task: {e}"));
            }
        }
    }
    r.seconds = start.elapsed().as_secs_f64();
    r.dhcp = Latency::of(&mut dhcp);
    r.tftp = Latency::of(&mut tftp);
    r.http = Latency::of(&mut http);
    r.total = Latency::of(&mut total);
    r
}

async fn boot(client: &DhcpClient, spec: &StormSpec, id: &Identity) -> Result<Booted, String> {
    let t0 = Instant::now();
    let lease: Lease = client.exchange(id).await.map_err(|e| format!("dhcp: {e}"))?;
    let local = spec.from_lease.then_some(lease.address);
    let mut b = Booted {
        dhcp: lease.latency,
        tftp: None,
        http: Vec::new(),
        tftp_bytes: 0,
        http_bytes: 0,
        total: Duration::ZERO,
    };
    let mac = packet::mac_string(&id.mac);
    let mut paths: Vec<(SocketAddrV4, String)> = Vec::new();
    match lease.boot_file.as_deref() {
        Some(url) if url.starts_with("http://") => {
            let (addr, path) = split_url(url).ok_or_else(|| format!("boot file URL {url:?} not understood"))?;
            paths.push((addr, path));
        }
        Some(file) => {
            if let Some(opts) = &spec.tftp {
                let server = if lease.next_server.is_unspecified() { lease.server_id } else { lease.next_server };
                let opts = FetchOptions { local, ..opts.clone() };
                let t = Instant::now();
                let f = tftp::fetch(SocketAddrV4::new(server, 69), file, &opts, None)
                    .await
                    .map_err(|e| format!("tftp {file}: {e:#}"))?;
                b.tftp = Some(t.elapsed());
                b.tftp_bytes = f.bytes;
            }
        }
        None => {}
    }
    if let Some(server) = spec.http_server {
        paths.extend(spec.http_paths.iter().map(|p| (server, p.replace("{mac}", &mac))));
    }
    for (server, path) in paths {
        let t = Instant::now();
        let g = osie_testkit::http::get(server, &path, local, &[("X-Osie-Mac", &mac)], spec.http_timeout, None)
            .await
            .map_err(|e| format!("http {path}: {e:#}"))?;
        b.http.push(t.elapsed());
        b.http_bytes += g.bytes;
    }
    b.total = t0.elapsed();
    Ok(b)
}

/// `http://1.2.3.4:8080/a/b` → (1.2.3.4:8080, "/a/b"). Addresses only: booting machines
/// are given addresses, not names.
pub(crate) fn split_url(url: &str) -> Option<(SocketAddrV4, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (ip, port) = match host.split_once(':') {
        Some((h, p)) => (h.parse::<Ipv4Addr>().ok()?, p.parse().ok()?),
        None => (host.parse().ok()?, 80),
    };
    Some((SocketAddrV4::new(ip, port), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_urls() {
        assert_eq!(
            split_url("http://192.0.2.1:8080/boot/02:0b:00:00:00:01.ipxe"),
            Some((SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 8080), "/boot/02:0b:00:00:00:01.ipxe".into()))
        );
        assert_eq!(
            split_url("http://192.0.2.1"),
            Some((SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 80), "/".into()))
        );
        assert_eq!(split_url("http://boot.example/x"), None);
        assert_eq!(split_url("tftp://192.0.2.1/x"), None);
    }
}
