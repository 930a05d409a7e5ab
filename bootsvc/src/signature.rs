//! OpenPGP detached signatures over a vendor's checksums file, checked against the keyring
//! the operator configures (`[images] keyring`, `bootsvc/docs/config.md`). Pure: bytes in,
//! a verdict out. rPGP (`pgp`): maintained, pure Rust, no system library.

use std::io::Cursor;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::types::KeyDetails;

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
    /// keyring (a primary key or a subkey). The error says which: unknown key, or bad.
    pub fn verify(&self, data: &[u8], sig: &[u8]) -> Result<(), String> {
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
                        Ok(()) => return Ok(()),
                        Err(e) => failures.push(format!("key {}: {e}", k.legacy_key_id())),
                    }
                }
                for sk in k.public_subkeys.iter().filter(|sk| named(&sk.legacy_key_id(), &sk.fingerprint())) {
                    match s.verify(sk, data) {
                        Ok(()) => return Ok(()),
                        Err(e) => failures.push(format!("subkey {}: {e}", sk.legacy_key_id())),
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
