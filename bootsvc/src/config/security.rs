//! `[security]`: the account bootsvc becomes once its ports are bound. The names are
//! checked and looked up here, so that `bootsvc check` (validation) and `serve` (the drop
//! itself, `crate::privileges`) accept the same accounts.

use anyhow::{bail, Context, Result};
use nix::unistd::{Gid, Group, User};

use super::Security;

impl Security {
    /// The user and group, looked up in the system's databases; `None` without a user.
    /// Errors start with the field they are about (`security.user: …`).
    pub fn resolve(&self) -> Result<Option<(User, Gid)>> {
        let Some(name) = &self.user else {
            if let Some(g) = &self.group {
                bail!("security.group = {g:?} needs security.user");
            }
            return Ok(None);
        };
        let user = User::from_name(name)
            .with_context(|| format!("security.user: looking up {name:?}"))?
            .with_context(|| format!("security.user: no user {name:?} on this system"))?;
        let gid = match &self.group {
            None => user.gid,
            Some(g) => {
                Group::from_name(g)
                    .with_context(|| format!("security.group: looking up {g:?}"))?
                    .with_context(|| format!("security.group: no group {g:?} on this system"))?
                    .gid
            }
        };
        Ok(Some((user, gid)))
    }
}

/// A user or group name as `[security]` accepts it.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let ok =
        !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a user or group name: 1 to 32 letters, digits, '.', '_', '-'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_lookups() {
        check_name("osie").unwrap();
        check_name("_bootsvc-1.x").unwrap();
        for bad in ["", "a b", "a/b", "x\0", &"a".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let root = Security { user: Some("root".into()), group: None }.resolve().unwrap().unwrap();
        assert_eq!((root.0.uid.as_raw(), root.1.as_raw()), (0, 0));
        let e = Security { user: Some("no-such-user-osie".into()), group: None }.resolve().unwrap_err();
        assert!(e.to_string().contains("no user \"no-such-user-osie\""), "{e:#}");
        assert!(Security { user: None, group: Some("root".into()) }.resolve().is_err());
        assert!(Security::default().resolve().unwrap().is_none());
    }
}
