//! Prometheus metrics, served at `/metrics`. One place defines every family so the names
//! stay consistent; protocol code calls the small helpers below.

use crate::storage::DbHealth;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

/// Bucket bounds of the phase durations, in seconds: 1 s to 2 h.
const PHASE_BUCKETS: [f64; 14] =
    [1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0];

fn phase_histogram() -> Histogram {
    Histogram::new(PHASE_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    /// DHCP replies sent, by message type (`offer`, `ack`, `nak`, `proxy-offer`…).
    pub dhcp_replies: Family<KindLabel, Counter>,
    /// Packets dropped, by protocol and reason (`dhcp-malformed`, `tftp-traversal`…).
    pub dropped: Family<ReasonLabel, Counter>,
    /// TFTP transfers, by outcome (`complete`, `aborted`, `refused`).
    pub tftp_transfers: Family<OutcomeLabel, Counter>,
    pub tftp_bytes: Counter,
    /// TFTP transfers open now (a file handed to a client and not yet finished or given up).
    pub tftp_in_flight: Gauge,
    /// HTTP requests, by route template and status code.
    pub http_requests: Family<RouteLabels, Counter>,
    /// File bytes sent with sendfile(2) (artifacts, images, the TFTP root over HTTP).
    pub http_sendfile_bytes: Counter,
    /// HTTP connections open now (both listeners).
    pub http_connections: Gauge,
    /// Installs finished, by outcome (`installed`, `failed`).
    pub installs: Family<OutcomeLabel, Counter>,
    /// Events stored, by phase.
    pub events: Family<KindLabel, Counter>,
    /// Boot trace steps, by outcome (`stored`, `dropped`: queue full, `unknown-machine`,
    /// `failed`: storage refused the batch).
    pub trace_steps: Family<OutcomeLabel, Counter>,
    /// Installer log chunks, by outcome (`stored`, `duplicate`, `full`, `refused`, `failed`).
    pub log_chunks: Family<OutcomeLabel, Counter>,
    /// Durations of the provisioning phases (`crate::tracer::Timings`), in seconds.
    pub phase_seconds: Family<PhaseLabel, Histogram, fn() -> Histogram>,
    /// With a shared database: 1 while it answers, and the events waiting for it.
    database: Option<(Gauge, Gauge)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::build(false)
    }

    /// The metrics of an instance on a shared database: also `osie_database_up` and
    /// `osie_database_spooled_events`.
    pub fn with_database() -> Metrics {
        Metrics::build(true)
    }

    fn build(database: bool) -> Metrics {
        let mut registry = Registry::with_prefix("osie");
        let m = Metrics {
            registry: Registry::default(),
            dhcp_replies: Family::default(),
            dropped: Family::default(),
            tftp_transfers: Family::default(),
            tftp_bytes: Counter::default(),
            tftp_in_flight: Gauge::default(),
            http_requests: Family::default(),
            http_sendfile_bytes: Counter::default(),
            http_connections: Gauge::default(),
            installs: Family::default(),
            events: Family::default(),
            trace_steps: Family::default(),
            log_chunks: Family::default(),
            phase_seconds: Family::new_with_constructor(phase_histogram as fn() -> Histogram),
            database: database.then(|| (Gauge::default(), Gauge::default())),
        };
        registry.register("dhcp_replies", "DHCP replies sent, by message type", m.dhcp_replies.clone());
        registry.register("dropped_packets", "Requests or packets refused, by reason", m.dropped.clone());
        registry.register("tftp_transfers", "TFTP transfers, by outcome", m.tftp_transfers.clone());
        registry.register("tftp_bytes", "TFTP payload bytes sent", m.tftp_bytes.clone());
        registry.register("tftp_transfers_in_flight", "TFTP transfers open now", m.tftp_in_flight.clone());
        registry.register("http_requests", "HTTP requests, by route and status", m.http_requests.clone());
        registry.register("http_sendfile_bytes", "File bytes sent with sendfile", m.http_sendfile_bytes.clone());
        registry.register("http_connections", "HTTP connections open now", m.http_connections.clone());
        registry.register("installs", "Installs finished, by outcome", m.installs.clone());
        registry.register("events", "Events stored, by phase", m.events.clone());
        registry.register("trace_steps", "Boot trace steps, by outcome", m.trace_steps.clone());
        registry.register("log_chunks", "Installer log chunks received, by outcome", m.log_chunks.clone());
        registry.register(
            "phase_duration_seconds",
            "Provisioning phase durations: dhcp-to-script, script-to-installer, image, install-total, installed-to-first-boot",
            m.phase_seconds.clone(),
        );
        if let Some((up, spooled)) = &m.database {
            registry.register("database_up", "1 while the shared database answers", up.clone());
            registry.register(
                "database_spooled_events",
                "Events acknowledged and kept in the local spool until the database answers",
                spooled.clone(),
            );
        }
        Metrics { registry, ..m }
    }

    pub fn dhcp_reply(&self, kind: &str) {
        self.dhcp_replies.get_or_create(&KindLabel { kind: kind.to_string() }).inc();
    }

    /// Count a refused packet or request. `reason` is short and stable, e.g.
    /// `dhcp-malformed`, `dhcp-unknown-mac`, `tftp-traversal`, `tftp-write`, `http-body-too-large`.
    pub fn drop_reason(&self, reason: &str) {
        self.dropped.get_or_create(&ReasonLabel { reason: reason.to_string() }).inc();
    }

    pub fn tftp_transfer(&self, outcome: &str) {
        self.tftp_transfers.get_or_create(&OutcomeLabel { outcome: outcome.to_string() }).inc();
    }

    pub fn http_request(&self, route: &str, status: u16) {
        self.http_requests.get_or_create(&RouteLabels { route: route.to_string(), status: status.to_string() }).inc();
    }

    pub fn install(&self, outcome: &str) {
        self.installs.get_or_create(&OutcomeLabel { outcome: outcome.to_string() }).inc();
    }

    pub fn event(&self, phase: &str) {
        self.events.get_or_create(&KindLabel { kind: phase.to_string() }).inc();
    }

    pub fn trace_step(&self, outcome: &str, n: u64) {
        self.trace_steps.get_or_create(&OutcomeLabel { outcome: outcome.to_string() }).inc_by(n);
    }

    pub fn log_chunk(&self, outcome: &str) {
        self.log_chunks.get_or_create(&OutcomeLabel { outcome: outcome.to_string() }).inc();
    }

    pub fn phase_duration(&self, phase: &str, secs: f64) {
        self.phase_seconds.get_or_create(&PhaseLabel { phase: phase.to_string() }).observe(secs);
    }

    /// The shared database's health as last seen.
    pub fn database(&self, h: DbHealth) {
        if let Some((up, spooled)) = &self.database {
            up.set(i64::from(h.up));
            spooled.set(i64::try_from(h.spooled).unwrap_or(i64::MAX));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_health_only_with_a_database() {
        assert!(!Metrics::new().render().contains("database"));
        let m = Metrics::with_database();
        m.database(DbHealth { up: false, spooled: 3 });
        let s = m.render();
        assert!(s.contains("osie_database_up 0"), "{s}");
        assert!(s.contains("osie_database_spooled_events 3"), "{s}");
    }

    #[test]
    fn renders_counted_families() {
        let m = Metrics::new();
        m.dhcp_reply("offer");
        m.dhcp_reply("offer");
        m.drop_reason("dhcp-malformed");
        let s = m.render();
        assert!(s.contains("osie_dhcp_replies_total{kind=\"offer\"} 2"), "{s}");
        assert!(s.contains("osie_dropped_packets_total{reason=\"dhcp-malformed\"} 1"), "{s}");
    }

    #[test]
    fn phase_durations_are_histograms() {
        let m = Metrics::new();
        m.phase_duration("image", 42.0);
        m.phase_duration("image", 4.0);
        let s = m.render();
        assert!(s.contains("# TYPE osie_phase_duration_seconds histogram"), "{s}");
        assert!(s.contains("osie_phase_duration_seconds_bucket{le=\"5.0\",phase=\"image\"} 1"), "{s}");
        assert!(s.contains("osie_phase_duration_seconds_bucket{le=\"60.0\",phase=\"image\"} 2"), "{s}");
        assert!(s.contains("osie_phase_duration_seconds_sum{phase=\"image\"} 46.0"), "{s}");
    }
}
