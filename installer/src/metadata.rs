//! `GET {base}/metadata`: what to install on this machine (from the bootsvc in use, see
//! [`crate::servers`]).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use osie_api::{MacAddr, Metadata};
use reqwest::blocking::Client;

use crate::backoff::Backoff;
use crate::http;
use crate::servers::{Failure, Servers};

/// Network just came up and bootsvc may be restarting: be patient (about two minutes).
pub const RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10), 16);

/// Fetch and parse the metadata from the server in use, moving on to the next on
/// connection errors and 5xx ([`Servers::run`]); a 4xx or a document that does not parse is
/// an answer and fails at once. `run_id` goes along (`X-Osie-Run`) so bootsvc's boot trace
/// files the read under this run.
pub fn fetch(client: &Client, servers: &Servers, mac: MacAddr, run_id: &str, backoff: Backoff) -> Result<Metadata> {
    let (body, url) = servers
        .run("fetching metadata", backoff, |base| {
            let url = format!("{base}{}", osie_api::paths::METADATA);
            let what = format!("GET {url}");
            let resp = client
                .get(&url)
                .header(osie_api::MAC_HEADER, mac.to_string())
                .header(osie_api::RUN_HEADER, run_id)
                .header(osie_api::ARCH_HEADER, std::env::consts::ARCH)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .map_err(|e| http::send_failure(&what, e))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(http::status_failure(&what, status, &resp.text().unwrap_or_default()));
            }
            let body = resp
                .bytes()
                .map_err(|e| Failure::Unreachable(anyhow!(e).context(format!("{what}: reading the body"))))?;
            Ok((body, url))
        })
        .context("fetching metadata")?;
    tracing::info!("metadata from {url}");
    parse(&body).with_context(|| format!("metadata from {url}"))
}

/// Parse and check a metadata document. Errors name the field (`install.image.sha256`).
pub fn parse(body: &[u8]) -> Result<Metadata> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let md: Metadata = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        anyhow!("field `{path}`: {}", e.into_inner())
    })?;
    if let Some(plan) = &md.install {
        let img = &plan.image;
        if !(img.url.starts_with("http://") || img.url.starts_with("https://")) {
            bail!("field `install.image.url`: {:?} is not an http(s) URL", img.url);
        }
        img.check_sha256().map_err(|e| anyhow!("field `install.image.sha256`: {e}"))?;
        let images = plan.gpt.layout.iter().filter(|p| p.image).count();
        if !plan.gpt.layout.is_empty() && images != 1 {
            bail!("field `install.gpt.layout`: exactly one partition must be marked `image` ({images} are)");
        }
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"instance_id":"i-1","hostname":"n1","mac":"52:54:00:00:00:01",
        "install":{"image":{"url":"http://192.0.2.1/i.raw.zst",
        "sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}}}"#;

    #[test]
    fn good_metadata_parses() {
        let md = parse(OK.as_bytes()).unwrap();
        assert_eq!(md.hostname, "n1");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (OK.replace("52:54:00:00:00:01", "nope"), "`mac`"),
            (OK.replace("i.raw.zst\"", "i.raw.zst\",\"size\":\"big\""), "`install.image.size`"),
            (OK.replace("\"sha256\":\"e3b0", "\"sha256\":\"zzzz"), "`install.image.sha256`"),
            (OK.replace("http://192.0.2.1", "ftp://192.0.2.1"), "`install.image.url`"),
            (
                OK.replace("}}}", "},\"gpt\":{\"layout\":[{\"name\":\"r\",\"type\":\"linux\",\"size\":\"lots\"}]}}}"),
                "`install.gpt.layout[0].size`",
            ),
            (OK.replace("}}}", "},\"finish\":\"explode\"}}"), "`install.finish`"),
            (OK.replace("\"hostname\":\"n1\",", ""), "hostname"),
        ];
        for (doc, want) in cases {
            let e = format!("{:#}", parse(doc.as_bytes()).unwrap_err());
            assert!(e.contains(want), "{want} not named in: {e}");
        }
    }
}
