//! The one HTTP client configuration every request of the installer uses, and how its
//! answers and errors are judged (retry or not). The image download's own reader
//! ([`crate::image::plain`]) takes its [`Timeouts`] from here too. Which failures move on to
//! another bootsvc is [`crate::servers`]'s decision, made on the [`Failure`]s judged here.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::blocking::Client;

use crate::servers::Failure;

/// Where an operator's CA certificate (PEM) is looked for when none is given: the
/// initramfs builder can drop it there for `https://` bootsvc URLs.
pub const DEFAULT_CA_FILE: &str = "/etc/osie/ca.pem";

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Extra trusted CA (PEM), for bootsvc or image servers with a private CA.
    pub ca_file: Option<std::path::PathBuf>,
    /// How long one read (or the wait for response headers) may stall before the transfer
    /// counts as dropped.
    pub read_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            ca_file: Path::new(DEFAULT_CA_FILE).exists().then(|| DEFAULT_CA_FILE.into()),
            read_timeout: Timeouts::default().read,
            connect_timeout: Timeouts::default().connect,
        }
    }
}

/// How long to wait for a connection and then for each read.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(10), read: Duration::from_secs(30) }
    }
}

impl HttpConfig {
    /// The timeouts, for the image download's own HTTP reader.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts { connect: self.connect_timeout, read: self.read_timeout }
    }

    pub fn client(&self) -> Result<Client> {
        let mut b = Client::builder()
            .timeout(self.read_timeout)
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("osie-installer/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("reading CA certificate {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("parsing CA certificate {}", ca.display()))?;
            b = b.add_root_certificate(cert);
        }
        b.build().context("building the HTTP client")
    }
}

/// A request that could not be sent or got no answer: unreachable (the next server is
/// tried), unless no retry can fix it ([`permanent`]). `what` is `GET <url>` or the like.
pub fn send_failure(what: &str, e: reqwest::Error) -> Failure {
    let permanent = permanent(&e);
    let e = anyhow::anyhow!("{what}: {:#}", anyhow::anyhow!(e.without_url()));
    if permanent {
        Failure::Answer(e)
    } else {
        Failure::Unreachable(e)
    }
}

/// A status that is not a success: unreachable when [`retryable_status`], else an answer.
pub fn status_failure(what: &str, status: reqwest::StatusCode, body: &str) -> Failure {
    let e = anyhow::anyhow!("{what}: server answered {status}: {}", body.trim());
    if retryable_status(status) {
        Failure::Unreachable(e)
    } else {
        Failure::Answer(e)
    }
}

/// 5xx, 408 and 429 are worth another try; other 4xx are an answer.
pub fn retryable_status(s: reqwest::StatusCode) -> bool {
    s.is_server_error() || s == reqwest::StatusCode::REQUEST_TIMEOUT || s == reqwest::StatusCode::TOO_MANY_REQUESTS
}

/// Errors no retry can fix: the server's certificate is not trusted (wrong CA, wrong name,
/// expired). Retrying would only delay the clear error by minutes.
pub fn permanent(e: &reqwest::Error) -> bool {
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        if s.to_string().contains("certificate") {
            return true;
        }
        src = s.source();
    }
    false
}
