//! OpenPGP detached signatures over a vendor's checksums file, checked against the keyring
//! the operator configures (`[images] keyring`, `bootsvc/docs/config.md`). Pure: bytes in,
//! a verdict out. rPGP (`pgp`): maintained, pure Rust, no system library.

use std::io::Cursor;

use pgp::composed::SignedPublicSubKey;
use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::Signature;
use pgp::types::{KeyDetails, Tag, Timestamp};

/// The public keys bootsvc trusts for vendor checksum files.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Public keys, ASCII-armored (`gpg --export --armor`) or binary (`gpg --export`, Debian's
    /// `*-archive-keyring.gpg`). A keyring without a key is refused: it could verify nothing.
    pub fn from_bytes(b: &[u8]) -> Result<Keyring, String> {
        let (keys, _) =
            SignedPublicKey::from_reader_many(Cursor::new(b)).map_err(|e| format!("not OpenPGP keys: {e}"))?;
        let keys = keys.collect::<Result<Vec<_>, _>>().map_err(|e| format!("a key does not parse: {e}"))?;
        if keys.is_empty() {
            return Err("holds no public key".into());
        }
        Ok(Keyring { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `Ok` if `sig` (armored or binary) is a good signature over `data` by a key of the
    /// keyring (a primary key or a subkey) that is neither revoked nor expired now. The error
    /// says which: unknown key, bad, revoked or expired.
    pub fn verify(&self, data: &[u8], sig: &[u8]) -> Result<(), String> {
        self.verify_at(data, sig, Timestamp::now())
    }

    /// [`Keyring::verify`] as of `now`.
    pub fn verify_at(&self, data: &[u8], sig: &[u8], now: Timestamp) -> Result<(), String> {
        let (sigs, _) = DetachedSignature::from_reader_many(Cursor::new(sig))
            .map_err(|e| format!("the signature does not parse: {e}"))?;
        let sigs = sigs.collect::<Result<Vec<_>, _>>().map_err(|e| format!("the signature does not parse: {e}"))?;
        if sigs.is_empty() {
            return Err("the signature file holds no signature".into());
        }
        let mut issuers = Vec::new();
        let mut failures = Vec::new();
        // Vendors sign with several keys at once (Debian): one good signature by a trusted
        // key is enough.
        for s in &sigs {
            let ids = s.signature.issuer_key_id();
            let fps = s.signature.issuer_fingerprint();
            issuers.extend(ids.iter().map(|i| i.to_string()));
            let named = |id: &pgp::types::KeyId, fp: &pgp::types::Fingerprint| ids.contains(&id) || fps.contains(&fp);
            for k in &self.keys {
                if named(&k.legacy_key_id(), &k.fingerprint()) {
                    match s.verify(k, data) {
                        Ok(()) => return primary_state(k, now),
                        Err(e) => failures.push(format!("key {}: {}", k.legacy_key_id(), why(&e))),
                    }
                }
                for sk in k.public_subkeys.iter().filter(|sk| named(&sk.legacy_key_id(), &sk.fingerprint())) {
                    match s.verify(sk, data) {
                        Ok(()) => return primary_state(k, now).and_then(|()| subkey_state(k, sk, now)),
                        Err(e) => failures.push(format!("subkey {}: {}", sk.legacy_key_id(), why(&e))),
                    }
                }
            }
        }
        if failures.is_empty() {
            issuers.sort();
            issuers.dedup();
            Err(format!("signed by a key not in the keyring (issuer {})", issuers.join(", ")))
        } else {
            Err(format!("bad signature: {}", failures.join("; ")))
        }
    }
}

/// A key whose signature verified may still not be trusted: revoked by itself, or expired
/// (as apt's gpgv refuses `EXPKEYSIG`). Only self-signatures that verify count, so a
/// stranger cannot revoke or extend a key by appending packets to the keyring file.
fn primary_state(k: &SignedPublicKey, now: Timestamp) -> Result<(), String> {
    let id = k.legacy_key_id();
    if let Some(r) = k.details.revocation_signatures.iter().find(|r| r.verify_key(&k.primary_key).is_ok()) {
        return Err(format!("key {id} is revoked{}", reason(r)));
    }
    // The newest self-signature (user ID binding or direct key signature) sets the expiry.
    let users = k.details.users.iter().flat_map(|u| {
        u.signatures.iter().filter(move |s| s.verify_certification(&k.primary_key, Tag::UserId, &u.id).is_ok())
    });
    let direct = k.details.direct_signatures.iter().filter(|s| s.verify_key(&k.primary_key).is_ok());
    let newest = users.chain(direct).max_by_key(|s| s.created().map(Timestamp::as_secs));
    expiry(newest, k.primary_key.created_at(), now).map_err(|at| format!("key {id} expired at {at}"))
}

/// A signing subkey: bound by its primary key, not revoked, not expired.
fn subkey_state(k: &SignedPublicKey, sk: &SignedPublicSubKey, now: Timestamp) -> Result<(), String> {
    use pgp::packet::SignatureType;
    let id = sk.legacy_key_id();
    let good: Vec<&Signature> =
        sk.signatures.iter().filter(|s| s.verify_subkey_binding(&k.primary_key, &sk.key).is_ok()).collect();
    if let Some(r) = good.iter().find(|s| s.typ() == Some(SignatureType::SubkeyRevocation)) {
        return Err(format!("subkey {id} is revoked{}", reason(r)));
    }
    let newest = good
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .max_by_key(|s| s.created().map(Timestamp::as_secs));
    let Some(binding) = newest else { return Err(format!("subkey {id} is not bound to key {}", k.legacy_key_id())) };
    if !binding.key_flags().sign() {
        return Err(format!("subkey {id} is not a signing key"));
    }
    expiry(Some(binding), sk.key.created_at(), now).map_err(|at| format!("subkey {id} expired at {at}"))
}

/// `Err(when)` (UTC, RFC 3339) if `sig`'s key expiration time, counted from the key's
/// creation, has passed by `now`. No subpacket, or zero, means no expiry.
fn expiry(sig: Option<&Signature>, created: Timestamp, now: Timestamp) -> Result<(), String> {
    let Some(d) = sig.and_then(|s| s.key_expiration_time()).filter(|d| d.as_secs() > 0) else { return Ok(()) };
    let end = u64::from(created.as_secs()) + u64::from(d.as_secs());
    if u64::from(now.as_secs()) < end {
        return Ok(());
    }
    Err(osie_api::time::rfc3339(end.saturating_mul(1000)))
}

/// rPGP's verification error in one line: its debug assertions span several lines ending
/// in the reason (`… invalid signed hash value`), which is what an operator can act on.
fn why(e: &pgp::errors::Error) -> String {
    let e = e.to_string();
    let last = e.lines().last().unwrap_or_default();
    let reason = last.rsplit(": ").next().unwrap_or(last).trim();
    match reason {
        "invalid signed hash value" => {
            "the file is not what it signed (changed after signing, or another file's signature)".into()
        }
        "" => e,
        r => r.to_string(),
    }
}

fn reason(r: &Signature) -> String {
    match r.revocation_reason_string() {
        Some(s) if !s.is_empty() => format!(" ({})", String::from_utf8_lossy(s)),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osie_testkit::gpg::Gpg;

    const SUMS: &[u8] = b"0123  debian.qcow2\n";

    fn refused(r: Result<(), String>, want: &str) {
        match r {
            Err(e) => assert!(e.contains(want), "{e:?} should say {want:?}"),
            Ok(()) => panic!("accepted: wanted a refusal saying {want:?}"),
        }
    }

    #[test]
    fn revoked_and_expired_keys_are_refused_even_with_good_signatures() {
        let g = Gpg::new();
        // Made in 2020 to expire a day later; it signed the file while it was valid.
        let past = ["--faked-system-time", "20200101T000000!"];
        let mut args = past.to_vec();
        args.extend(["--quick-gen-key", "Old <old@example.org>", "ed25519", "sign", "1d"]);
        g.run(&args);
        let old_sig = g.sign(SUMS, "old@example.org", false, &past);
        let old = Keyring::from_bytes(&g.export("old@example.org")).unwrap();
        // As of the day it was made, it is good; now it is expired (as apt's gpgv says).
        let in_2020 = Timestamp::from_secs(1_577_840_000);
        assert_eq!(old.verify_at(SUMS, &old_sig, in_2020), Ok(()));
        refused(old.verify(SUMS, &old_sig), "expired at 2020-01-02T00:00:00");

        // Signed, then revoked by its owner (the certificate gpg writes at key creation).
        g.run(&["--quick-gen-key", "Gone <gone@example.org>", "ed25519", "sign", "never"]);
        let gone_sig = g.sign(SUMS, "gone@example.org", false, &[]);
        let before = Keyring::from_bytes(&g.export("gone@example.org")).unwrap();
        assert_eq!(before.verify(SUMS, &gone_sig), Ok(()));
        g.revoke("gone@example.org");
        let after = Keyring::from_bytes(&g.export("gone@example.org")).unwrap();
        refused(after.verify(SUMS, &gone_sig), "is revoked");

        // A signing subkey (how vendors usually sign): good while bound and valid; an expired
        // subkey is refused though its primary key is fine.
        let mut args = past.to_vec();
        args.extend(["--quick-gen-key", "Vendor <vendor@example.org>", "ed25519", "cert", "never"]);
        g.run(&args);
        let fpr = g.fpr("vendor@example.org");
        let mut args = past.to_vec();
        args.extend(["--quick-add-key", fpr.as_str(), "ed25519", "sign", "1d"]);
        g.run(&args);
        let sub_sig = g.sign(SUMS, &fpr, true, &past);
        let vendor = Keyring::from_bytes(&g.export("vendor@example.org")).unwrap();
        assert_eq!(vendor.verify_at(SUMS, &sub_sig, in_2020), Ok(()));
        refused(vendor.verify(SUMS, &sub_sig), "subkey");
        refused(vendor.verify(SUMS, &sub_sig), "expired");
        g.run(&["--quick-add-key", fpr.as_str(), "ed25519", "sign", "never"]);
        let new_sig = g.sign(SUMS, &fpr, false, &[]);
        let vendor = Keyring::from_bytes(&g.export("vendor@example.org")).unwrap();
        assert_eq!(vendor.verify(SUMS, &new_sig), Ok(()));
    }
}
