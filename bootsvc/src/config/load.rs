//! Reading `bootsvc.toml`: parse with the field path of any type error, resolve relative
//! paths against the file's directory, then validate everything.

use std::path::{Path, PathBuf};

use super::Config;
use crate::problem::{Problem, Problems};

impl Config {
    /// Read, parse, resolve paths and validate. On failure, every problem found.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        let cfg = Config::load_unchecked(path).map_err(|p| Problems(vec![p]))?;
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(problems)
        }
    }

    /// Read, parse and resolve paths, without [`Config::validate`] (for `bootsvc check`, which
    /// goes on to the inventory even when the config has problems).
    pub fn load_unchecked(path: &Path) -> Result<Config, Problem> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Problem::new(path, "", format!("cannot read the config file: {e}")))?;
        let mut cfg = Config::parse(&text, path)?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = abs.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.resolve_paths(&base);
        cfg.source = abs;
        cfg.http.public_url = cfg.http.public_url.trim_end_matches('/').to_string();
        Ok(cfg)
    }

    /// Parse TOML text; relative paths stay as written. `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Problem> {
        let de = toml::de::Deserializer::parse(text)
            .map_err(|e| Problem::new(path, at_line(text, e.span()), format!("not valid TOML: {}", e.message())))?;
        serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let field = if field == "." { at_line(text, inner.span()) } else { field };
            Problem::new(path, field, inner.message().to_string())
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tftp.root);
        fix(&mut self.artifacts.dir);
        fix(&mut self.artifacts.images_dir);
        fix(&mut self.state.dir);
        if let Some(k) = self.images.keyring.as_mut() {
            fix(k);
        }
        if let Some(inv) = self.inventory.as_mut() {
            fix(&mut inv.dir);
        }
        if let Some(t) = self.admin.token_file.as_mut() {
            fix(t);
        }
        if let Some(t) = self.admin.read_only_token_file.as_mut() {
            fix(t);
        }
        if let Some(f) = self.database.as_mut().and_then(|d| d.url_file.as_mut()) {
            fix(f);
        }
    }

    /// Where the CLI reaches this service's admin API (`admin.listen`): `http://ip:port`, or
    /// `unix:/path` for a Unix socket.
    pub fn admin_url(&self) -> String {
        match &self.admin.listen {
            super::AdminListen::Tcp(a) => format!("http://{a}"),
            super::AdminListen::Unix(p) => format!("unix:{}", p.display()),
        }
    }
}

/// A parsed config for unit tests elsewhere in the crate (its paths are not checked).
#[cfg(test)]
pub(crate) fn sample() -> Config {
    let mut c = Config::parse(tests::MINIMAL, Path::new("bootsvc.toml")).expect("the sample config parses");
    c.http.public_url = c.http.public_url.trim_end_matches('/').to_string();
    c
}

/// `line N, column M` for a byte span, for errors that have no field path.
fn at_line(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {col}")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const MINIMAL: &str = r#"
[listen]
interface = "br0"
address = "192.0.2.1"
[tftp]
root = "tftp"
[http]
listen = "0.0.0.0:8080"
public_url = "http://192.0.2.1:8080/"
[artifacts]
dir = "artifacts"
images_dir = "/srv/images"
[state]
dir = "state"
[inventory]
dir = "machines"
"#;

    #[test]
    fn parses_with_defaults() {
        let c = Config::parse(MINIMAL, Path::new("b.toml")).unwrap();
        assert!(c.dhcp.enabled && c.tftp.enabled);
        assert_eq!(c.http.max_body_bytes, 1 << 20);
        assert_eq!(c.artifacts.kernel, "vmlinuz");
        assert_eq!(c.admin_url(), "http://127.0.0.1:8081");
        assert_eq!((c.http.max_connections, c.http.max_connections_per_source), (1024, 64));
    }

    #[test]
    fn type_errors_name_the_field() {
        let text = MINIMAL.replace("listen = \"0.0.0.0:8080\"", "listen = 8080");
        let p = Config::parse(&text, Path::new("b.toml")).unwrap_err();
        assert_eq!(p.field, "http.listen");
        let text = MINIMAL.replace("[state]", "[state]\ncolour = \"blue\"");
        let p = Config::parse(&text, Path::new("b.toml")).unwrap_err();
        assert_eq!(p.field, "state.colour");
        assert!(p.what.contains("unknown field"), "{p}");
        let text = MINIMAL.replace("[dhcp]", "").replace("[state]", "[dhcp]\nmode = \"relay\"\n[state]");
        let p = Config::parse(&text, Path::new("b.toml")).unwrap_err();
        assert_eq!(p.field, "dhcp.mode", "{p}");
    }

    #[test]
    fn router_advertisements_default_to_auto() {
        use crate::config::RaMode;
        assert_eq!(Config::parse(MINIMAL, Path::new("b.toml")).unwrap().router_advertisements.mode, RaMode::Auto);
        let text = format!("{MINIMAL}[router_advertisements]\nmode = \"off\"\n");
        assert_eq!(Config::parse(&text, Path::new("b.toml")).unwrap().router_advertisements.mode, RaMode::Off);
        let text = format!("{MINIMAL}[router_advertisements]\nmode = \"sometimes\"\n");
        let p = Config::parse(&text, Path::new("b.toml")).unwrap_err();
        assert_eq!(p.field, "router_advertisements.mode", "{p}");
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let text = MINIMAL.replace("[tftp]", "[tftp");
        let p = Config::parse(&text, Path::new("b.toml")).unwrap_err();
        assert!(p.field.starts_with("line 5,"), "{p}");
        let p = Config::parse("[listen]\ninterface = \"br0\"\n", Path::new("b.toml")).unwrap_err();
        assert!(p.what.contains("missing field"), "{p}");
    }

    #[test]
    fn resolves_relative_paths_against_the_file() {
        let mut c = Config::parse(MINIMAL, Path::new("b.toml")).unwrap();
        c.resolve_paths(Path::new("/etc/osie"));
        assert_eq!(c.tftp.root, Path::new("/etc/osie/tftp"));
        assert_eq!(c.artifacts.images_dir, Path::new("/srv/images"));
        assert_eq!(c.inventory.unwrap().dir, Path::new("/etc/osie/machines"));
    }
}
