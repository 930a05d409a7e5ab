//! The image download as a [`Read`] that survives dropped connections.
//!
//! When the connection drops (an error, a stall past the read timeout, or an early end
//! before `Content-Length`), it asks again with `Range: bytes=<received>-` and `If-Range:`
//! the validator of the first answer (a strong ETag, else Last-Modified), and checks that the
//! `206` continues exactly where it stopped. If the server answers `200` instead (the file
//! changed, or it cannot do ranges) or there is no validator to check, it fails with
//! [`Restart`]: the caller starts the whole stream over from byte 0 rather than splice two
//! different files.
//!
//! With several bootsvc instances the file is on each of them ([`Servers::for_url`]): a
//! connection error or a 5xx moves the download to the next one, which is asked for the
//! rest with the same `If-Range`. Instances serving copies of one file give the same
//! validator (bootsvc's ETag is size and modification time, `bootsvc/docs/config.md`), so
//! the download continues there; a copy with another validator answers `200`, and the
//! stream starts over from byte 0 on that instance.

use std::io::{self, Read};

use anyhow::anyhow;
use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE};
use reqwest::StatusCode;

use super::plain;
use crate::backoff::Backoff;
use crate::http::{self, Timeouts};
use crate::servers::{Servers, Tries};

/// The download cannot be resumed safely; start it over.
#[derive(Debug, thiserror::Error)]
#[error("cannot resume {url} at byte {at}: {why}")]
pub struct Restart {
    pub url: String,
    pub at: u64,
    pub why: String,
}

/// One answer being read: through our own reader for plain HTTP ([`plain`]), else reqwest.
enum Body {
    Plain(plain::Response),
    Reqwest(Response),
}

impl Body {
    fn status(&self) -> StatusCode {
        match self {
            Body::Plain(r) => r.status,
            Body::Reqwest(r) => r.status(),
        }
    }

    fn headers(&self) -> &HeaderMap {
        match self {
            Body::Plain(r) => &r.headers,
            Body::Reqwest(r) => r.headers(),
        }
    }

    fn content_length(&self) -> Option<u64> {
        match self {
            Body::Plain(r) => r.content_length(),
            Body::Reqwest(r) => r.content_length(),
        }
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Plain(r) => r.read(buf),
            Body::Reqwest(r) => r.read(buf),
        }
    }
}

pub struct Download {
    client: Client,
    /// The file on each server; the one in use is asked.
    servers: Servers,
    /// The URL of the answer being read.
    url: String,
    /// Its place in `servers`.
    at: usize,
    timeouts: Timeouts,
    /// Use [`plain`] while the server's answers suit it.
    plain: bool,
    resp: Option<Body>,
    pos: u64,
    total: Option<u64>,
    validator: Option<String>,
    /// Consecutive failures without a byte received in between, per server.
    tries: Tries,
    /// Connections resumed so far (for logs and tests).
    pub resumes: u32,
}

enum Failure {
    Transient(anyhow::Error),
    Fatal(io::Error),
}

impl Download {
    /// Start the download from the server in use (the first request is retried like any
    /// later one).
    pub fn open(client: Client, servers: Servers, backoff: Backoff, timeouts: Timeouts) -> io::Result<Download> {
        let (at, url) = servers.current();
        let tries = Tries::new(servers.urls().len(), backoff);
        let mut d = Download {
            client,
            servers,
            plain: plain::handles(&url),
            url,
            at,
            timeouts,
            resp: None,
            pos: 0,
            total: None,
            validator: None,
            tries,
            resumes: 0,
        };
        d.connect_with_retries(None)?;
        Ok(d)
    }

    /// `Content-Length` of the first answer, if it gave one.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    fn connect_with_retries(&mut self, mut last: Option<String>) -> io::Result<()> {
        loop {
            if let Some(why) = last.take() {
                self.servers.failed(self.at, &why);
                let Some(wait) = self.tries.failed(self.at, why.clone()) else {
                    let all = self.servers.urls();
                    let why = if all.len() > 1 { self.tries.give_up(all) } else { why };
                    return Err(io::Error::other(format!(
                        "downloading {} failed at byte {}: {why} (gave up after {} tries)",
                        self.url,
                        self.pos,
                        self.tries.failures()
                    )));
                };
                let failed = std::mem::take(&mut self.url);
                (self.at, self.url) = self.servers.current();
                let next = match wait.is_zero() {
                    true => format!("going on with {}", self.url),
                    false => format!("retrying in {wait:?}"),
                };
                tracing::warn!("download of {failed} interrupted at byte {}: {why}; {next}", self.pos);
                std::thread::sleep(wait);
            }
            match self.connect() {
                Ok(r) => {
                    self.resp = Some(r);
                    return Ok(());
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(e)) => last = Some(format!("{e:#}")),
            }
        }
    }

    fn connect(&mut self) -> Result<Body, Failure> {
        let mut extra = Vec::new();
        if self.pos > 0 {
            let Some(v) = &self.validator else {
                return Err(self.restart("the server gave no ETag or Last-Modified to check a resume against"));
            };
            extra.push((RANGE, format!("bytes={}-", self.pos)));
            extra.push((IF_RANGE, v.clone()));
        }
        let resp = match self.plain && plain::handles(&self.url) {
            true => plain::get(&self.url, &extra, self.timeouts).map_err(|e| Failure::Transient(anyhow!(e)))?,
            false => None,
        };
        let resp = match resp {
            Some(r) => Body::Plain(r),
            None => {
                // Once an answer needed reqwest (a redirect, a chunked body), keep to it.
                self.plain = false;
                let mut req = self.client.get(&self.url);
                for (k, v) in extra {
                    req = req.header(k, v);
                }
                Body::Reqwest(req.send().map_err(|e| {
                    if http::permanent(&e) {
                        Failure::Fatal(io::Error::other(format!("GET {}: {:#}", self.url, anyhow!(e))))
                    } else {
                        Failure::Transient(anyhow!(e))
                    }
                })?)
            }
        };
        let status = resp.status();
        if status.is_server_error() || http::retryable_status(status) {
            return Err(Failure::Transient(anyhow!("server answered {status}")));
        }
        if self.pos == 0 {
            if status != StatusCode::OK {
                return Err(Failure::Fatal(io::Error::other(format!("GET {}: server answered {status}", self.url))));
            }
            self.total = resp.content_length();
            self.validator = validator(resp.headers());
            return Ok(resp);
        }
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let start = content_range_start(resp.headers());
                if start != Some(self.pos) {
                    return Err(self.restart(&format!("the server resumed at {start:?}")));
                }
                if validator(resp.headers()).is_some_and(|v| Some(&v) != self.validator.as_ref()) {
                    return Err(self.restart("the validator changed"));
                }
                self.resumes += 1;
                tracing::info!("resumed {} at byte {}", self.url, self.pos);
                Ok(resp)
            }
            StatusCode::OK => Err(self.restart("the server sent the whole file again (it changed, or ignores ranges)")),
            s => Err(Failure::Fatal(io::Error::other(format!(
                "GET {} from byte {}: server answered {s}",
                self.url, self.pos
            )))),
        }
    }

    fn restart(&self, why: &str) -> Failure {
        Failure::Fatal(io::Error::other(Restart { url: self.url.clone(), at: self.pos, why: why.to_string() }))
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(resp) = self.resp.as_mut() else {
                return Ok(0);
            };
            let why = match resp.read(buf) {
                Ok(0) => match self.total {
                    Some(t) if self.pos < t => format!("connection closed at byte {} of {t}", self.pos),
                    _ => return Ok(0),
                },
                Ok(n) => {
                    self.pos += n as u64;
                    self.tries.reset();
                    return Ok(n);
                }
                Err(e) => format!("{e}"),
            };
            self.resp = None;
            self.connect_with_retries(Some(why))?;
        }
    }
}

/// A strong ETag, else Last-Modified: what `If-Range` may carry (weak ETags may not).
fn validator(h: &HeaderMap) -> Option<String> {
    let etag = h.get(ETAG).and_then(|v| v.to_str().ok()).filter(|e| !e.starts_with("W/"));
    etag.or_else(|| h.get(LAST_MODIFIED).and_then(|v| v.to_str().ok())).map(str::to_string)
}

/// `Content-Range: bytes 100-199/200` → 100.
fn content_range_start(h: &HeaderMap) -> Option<u64> {
    let v = h.get(CONTENT_RANGE)?.to_str().ok()?;
    v.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn validators_and_ranges() {
        let mut h = HeaderMap::new();
        assert_eq!(validator(&h), None);
        h.insert(LAST_MODIFIED, HeaderValue::from_static("Sat, 21 Nov 2026 18:00:00 GMT"));
        assert_eq!(validator(&h).as_deref(), Some("Sat, 21 Nov 2026 18:00:00 GMT"));
        h.insert(ETAG, HeaderValue::from_static("W/\"weak\""));
        assert_eq!(validator(&h).as_deref(), Some("Sat, 21 Nov 2026 18:00:00 GMT"), "weak ETags cannot be used");
        h.insert(ETAG, HeaderValue::from_static("\"abc\""));
        assert_eq!(validator(&h).as_deref(), Some("\"abc\""));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("bytes 1048576-2097151/2097152"));
        assert_eq!(content_range_start(&h), Some(1 << 20));
        h.insert(CONTENT_RANGE, HeaderValue::from_static("items 1-2/3"));
        assert_eq!(content_range_start(&h), None);
    }
}
