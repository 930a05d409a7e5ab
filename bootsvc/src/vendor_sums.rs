//! A record's image given by a vendor's checksums file (`checksums_url`, optionally
//! `signature_url`): bootsvc fetches the file (and its detached signature) once, checks the
//! signature against the operator's keyring, and takes the digest for the image's file name
//! (the last path segment of its URL). The machine only ever receives the digest: it never
//! decides what it trusts. `bootsvc/docs/inventory.md` says where a refusal shows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::inventory::checksums::{digest_for, file_name, Digest, MAX_BYTES};
use crate::signature::Keyring;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Why an image's digest could not be had. `Unreachable` may pass (the installer retries);
/// `Refused` will not until the record, the keyring or the vendor's files change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SumsError {
    Unreachable(String),
    Refused(String),
}

impl std::fmt::Display for SumsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SumsError::Unreachable(s) | SumsError::Refused(s) => f.write_str(s),
        }
    }
}

/// (checksums URL, signature URL).
type SumsKey = (String, Option<String>);

/// Verified checksums files by (checksums URL, signature URL). Only verified files are kept;
/// a failure is asked again next time.
pub struct VendorSums {
    client: reqwest::Client,
    keyring: Option<Arc<Keyring>>,
    cache: Mutex<HashMap<SumsKey, Arc<str>>>,
}

impl VendorSums {
    pub fn new(keyring: Option<Arc<Keyring>>) -> VendorSums {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .unwrap_or_default();
        VendorSums { client, keyring, cache: Mutex::new(HashMap::new()) }
    }

    /// The digest of `image_url`'s file per the checksums file at `sums_url`, signed as
    /// `sig_url` says (when given).
    pub async fn digest(&self, image_url: &str, sums_url: &str, sig_url: Option<&str>) -> Result<Digest, SumsError> {
        let name = file_name(image_url)
            .ok_or_else(|| SumsError::Refused(format!("image URL {image_url:?} ends in no file name")))?;
        let key = (sums_url.to_string(), sig_url.map(str::to_string));
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        let text = match cached {
            Some(t) => t,
            None => {
                let t: Arc<str> = self.fetch_verified(sums_url, sig_url).await?.into();
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, t.clone());
                t
            }
        };
        digest_for(&text, name).map_err(|e| SumsError::Refused(format!("checksums file {sums_url}: {e}")))
    }

    async fn fetch_verified(&self, sums_url: &str, sig_url: Option<&str>) -> Result<String, SumsError> {
        let sums = self.get(sums_url).await?;
        if let Some(sig_url) = sig_url {
            let keyring = self.keyring.as_ref().ok_or_else(|| {
                SumsError::Refused(format!(
                    "signature {sig_url}: no keyring to check it against ([images] keyring is not set)"
                ))
            })?;
            let sig = self.get(sig_url).await?;
            keyring
                .verify(&sums, &sig)
                .map_err(|e| SumsError::Refused(format!("checksums file {sums_url}, signature {sig_url}: {e}")))?;
        }
        String::from_utf8(sums).map_err(|_| SumsError::Refused(format!("checksums file {sums_url}: not UTF-8 text")))
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, SumsError> {
        let unreachable = |e: String| SumsError::Unreachable(format!("GET {url}: {e}"));
        let mut resp = self.client.get(url).send().await.map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            let e = format!("GET {url}: server answered {status}");
            // A 404 is the vendor's answer (a wrong URL in the record), not an outage.
            return Err(if status.is_server_error() { SumsError::Unreachable(e) } else { SumsError::Refused(e) });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| unreachable(e.to_string()))? {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(SumsError::Refused(format!("GET {url}: larger than {MAX_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    //! Keys and signatures made here by `gpg` (a temporary GNUPGHOME), served over loopback.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::inventory::checksums::Algo;
    use osie_testkit::gpg::Gpg;

    const IMAGE: &str = "debian-12-genericcloud-amd64.qcow2";

    /// Serves `files` by path on 127.0.0.1, counting requests.
    async fn serve(files: HashMap<String, Vec<u8>>) -> (String, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let (files, h) = (Arc::new(files), Arc::clone(&hits));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let (files, h) = (Arc::clone(&files), Arc::clone(&h));
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let path = req.split(' ').nth(1).unwrap_or("").to_string();
                    h.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = match files.get(&path) {
                        Some(b) => ("200 OK", b.clone()),
                        None => ("404 Not Found", b"not found\n".to_vec()),
                    };
                    let head =
                        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
        (base, hits)
    }

    #[tokio::test]
    async fn signed_checksum_files_good_bad_unknown_missing_unreachable() {
        let g = Gpg::new();
        // The vendor's key (RSA, as Debian's and Ubuntu's are) and a stranger's (Ed25519).
        g.run(&["--quick-gen-key", "Vendor <vendor@example.org>", "rsa2048", "sign", "never"]);
        g.run(&["--quick-gen-key", "Stranger <other@example.org>", "ed25519", "sign", "never"]);
        let keyring = Keyring::from_bytes(&g.export("vendor@example.org")).unwrap();
        assert_eq!(keyring.len(), 1);

        let (a, b) = ("a1".repeat(32), "b2".repeat(64));
        let gnu = format!("{a}  {IMAGE}\n{}  other.img\n", "00".repeat(32));
        let bsd = format!("SHA512 ({IMAGE}) = {b}\n");
        let sign = |text: &str, who: &str, armor: bool| g.sign(text.as_bytes(), who, armor, &[]);
        let mut files = HashMap::new();
        files.insert("/SHA256SUMS".to_string(), gnu.clone().into_bytes());
        files.insert("/SHA256SUMS.gpg".to_string(), sign(&gnu, "vendor@example.org", false));
        files.insert("/SHA512SUMS".to_string(), bsd.clone().into_bytes());
        files.insert("/SHA512SUMS.asc".to_string(), sign(&bsd, "vendor@example.org", true));
        // Changed after signing: one digit of the image's digest.
        files.insert("/changed/SHA256SUMS".to_string(), gnu.replacen("a1", "a2", 1).into_bytes());
        files.insert("/stranger/SHA256SUMS.gpg".to_string(), sign(&gnu, "other@example.org", false));
        let (base, hits) = serve(files).await;
        let image = format!("https://cloud.example.org/images/{IMAGE}");
        let sums = VendorSums::new(Some(Arc::new(keyring)));
        let u = |p: &str| format!("{base}{p}");

        // Good: GNU form with a binary signature; BSD form (SHA-512) with an armored one.
        let d = sums.digest(&image, &u("/SHA256SUMS"), Some(&u("/SHA256SUMS.gpg"))).await.unwrap();
        assert_eq!((d.algo, d.hex.as_str()), (Algo::Sha256, a.as_str()));
        let d = sums.digest(&image, &u("/SHA512SUMS"), Some(&u("/SHA512SUMS.asc"))).await.unwrap();
        assert_eq!((d.algo, d.hex.as_str()), (Algo::Sha512, b.as_str()));
        // Fetched once per URL: a second machine's request costs no fetch.
        let before = hits.load(Ordering::SeqCst);
        sums.digest(&image, &u("/SHA256SUMS"), Some(&u("/SHA256SUMS.gpg"))).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), before);

        let refused = |r: Result<Digest, SumsError>, want: &str| match r {
            Err(SumsError::Refused(e)) => assert!(e.contains(want), "{e:?} should say {want:?}"),
            other => panic!("{other:?}: wanted a refusal saying {want:?}"),
        };
        // The file changed after it was signed.
        refused(sums.digest(&image, &u("/changed/SHA256SUMS"), Some(&u("/SHA256SUMS.gpg"))).await, "bad signature");
        // Signed, well, by a key the operator does not trust.
        refused(
            sums.digest(&image, &u("/SHA256SUMS"), Some(&u("/stranger/SHA256SUMS.gpg"))).await,
            "not in the keyring",
        );
        // A signature of the other file.
        refused(sums.digest(&image, &u("/SHA256SUMS"), Some(&u("/SHA512SUMS.asc"))).await, "bad signature");
        // The image's name is not in the file.
        refused(
            sums.digest("http://x.example.org/debian-13.qcow2", &u("/SHA256SUMS"), Some(&u("/SHA256SUMS.gpg"))).await,
            "debian-13.qcow2",
        );
        // A wrong URL in the record is the vendor's answer, not an outage.
        refused(sums.digest(&image, &u("/nope"), None).await, "404");
        // A signature with no keyring configured.
        let no_keys = VendorSums::new(None);
        refused(no_keys.digest(&image, &u("/SHA256SUMS"), Some(&u("/SHA256SUMS.gpg"))).await, "no keyring");
        // Unsigned, when the record gives no signature_url: the operator's choice.
        assert_eq!(no_keys.digest(&image, &u("/SHA256SUMS"), None).await.unwrap().hex, a);

        // Nobody listens: may pass, so the installer retries.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = format!("http://{}/SHA256SUMS", closed.local_addr().unwrap());
        drop(closed);
        match sums.digest(&image, &gone, None).await {
            Err(SumsError::Unreachable(e)) => assert!(e.contains(&gone), "{e}"),
            other => panic!("{other:?}: wanted unreachable"),
        }
    }

    #[test]
    fn keyring_refuses_what_holds_no_key() {
        assert!(Keyring::from_bytes(b"").is_err());
        assert!(Keyring::from_bytes(b"not a key\n").is_err());
    }
}
