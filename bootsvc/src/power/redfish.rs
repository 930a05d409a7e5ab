//! A Redfish client for one action (reqwest over rustls): TLS verified against the record's
//! CA file (or the system roots; `insecure` turns verification off), a session
//! (`SessionService`, logged out after) or basic auth when the BMC has no sessions,
//! per-request timeouts cut to the action's [`Budget`], retries with backoff for what is
//! safe to repeat. The documents are read by [`super::redfish_json`].
//!
//! Safe to repeat: GET and the boot-override PATCH (the same state twice), and any request
//! that never reached the BMC (no connection). A reset POST that timed out or got a 5xx is
//! not repeated: the BMC may have done it, and a second `ForceRestart` would reset the
//! machine again in the middle of its boot.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::redfish_json::{self as rj, System};
use super::{backoff, netboots, reset_for, Action, Budget, ErrorKind, PowerError, Report, Step, TRIES};
use crate::inventory::bmc::{redfish_url, Bmc, Credentials};

type Result<T> = std::result::Result<T, PowerError>;

enum Auth {
    /// The login itself: the service root and the session request carry no credentials of
    /// their own (the session request has them in its body).
    None,
    Basic,
    Session {
        token: String,
        location: Option<String>,
    },
}

struct Client<'a> {
    http: reqwest::Client,
    base: String,
    creds: &'a Credentials,
    auth: Auth,
    budget: Budget,
}

/// Run `action` (see [`super::perform`]), its steps into `r`.
pub async fn perform(bmc: &Bmc, creds: &Credentials, action: Action, budget: Budget, r: &mut Report) -> Result<()> {
    let url = redfish_url(&bmc.address).map_err(|e| PowerError::new(ErrorKind::Config, e))?;
    let mut c = Client { http: http_client(bmc)?, base: url.base(), creds, auth: Auth::None, budget };
    c.login(r).await?;
    let out = act(&mut c, bmc, action, r).await;
    c.logout(r).await;
    out
}

async fn act(c: &mut Client<'_>, bmc: &Bmc, action: Action, r: &mut Report) -> Result<()> {
    let path = match &bmc.system {
        Some(p) => p.clone(),
        None => {
            let v = c.get("/redfish/v1/Systems", r).await?;
            let m = rj::members(&v).map_err(|e| garbage("/redfish/v1/Systems", e))?;
            match m.as_slice() {
                [one] => one.clone(),
                [] => return Err(PowerError::new(ErrorKind::Refused, "the BMC lists no system")),
                many => {
                    return Err(PowerError::new(
                        ErrorKind::Config,
                        format!("the BMC has {} systems: say which in bmc.system ({})", many.len(), many.join(", ")),
                    ))
                }
            }
        }
    };
    let v = c.get(&path, r).await?;
    let sys: System = rj::system(&v).map_err(|e| garbage(&path, e))?;
    r.power = sys.power;
    r.system = sys.info.clone();
    if netboots(action) {
        let body =
            rj::boot_once(bmc.boot_target, bmc.boot_mode, &sys).map_err(|e| PowerError::new(ErrorKind::Refused, e))?;
        c.send(Method::PATCH, &path, Some(body), true, r).await?;
    }
    if let Some(reset) = reset_for(action) {
        let target = sys
            .reset_target
            .clone()
            .ok_or_else(|| garbage(&path, "no Actions.#ComputerSystem.Reset.target: the system cannot be reset"))?;
        let t =
            rj::reset_type(reset, &sys.reset_types, sys.power).map_err(|e| PowerError::new(ErrorKind::Refused, e))?;
        c.send(Method::POST, &target, Some(json!({"ResetType": t})), false, r).await?;
    }
    Ok(())
}

fn garbage(path: &str, why: impl std::fmt::Display) -> PowerError {
    PowerError::new(ErrorKind::Garbage, format!("GET {path}: {why}"))
}

fn http_client(bmc: &Bmc) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        // A BMC that redirects is told nothing more: the credentials stay with the address
        // the record names.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("osie-bootsvc/", env!("CARGO_PKG_VERSION")));
    if bmc.insecure {
        b = b.danger_accept_invalid_certs(true);
    } else if let Some(ca) = &bmc.ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| PowerError::new(ErrorKind::Config, format!("{}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| PowerError::new(ErrorKind::Config, format!("{}: {e}", ca.display())))?;
        b = b.tls_built_in_root_certs(false);
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| PowerError::new(ErrorKind::Config, format!("building the HTTPS client: {}", chain(&e))))
}

/// An error and its causes on one line (reqwest's own `Display` stops at the first).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

impl Client<'_> {
    /// A session when the service root links to a session service (the root answers
    /// without credentials), else basic auth on every request.
    async fn login(&mut self, r: &mut Report) -> Result<()> {
        let root = self.get("/redfish/v1/", r).await?;
        let Some(path) = rj::sessions_path(&root) else {
            r.steps.push(Step { sent: "(no session service)".into(), answer: "basic auth".into() });
            self.auth = Auth::Basic;
            return Ok(());
        };
        let body = json!({"UserName": self.creds.username, "Password": self.creds.password});
        let sent = format!("POST {path} (user {})", self.creds.username);
        let resp = match self.request(Method::POST, &path, Some(&body)).await {
            Ok(resp) => resp,
            Err(e) => {
                r.steps.push(Step { sent: sent.clone(), answer: e.message.clone() });
                return Err(at(&sent, e));
            }
        };
        let status = resp.status();
        let token = resp.headers().get("x-auth-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let location = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let msg = rj::error_message(&resp.bytes().await.unwrap_or_default());
        match (status, token) {
            (s, Some(token)) if s.is_success() => {
                r.steps.push(Step { sent, answer: format!("{} session opened", s.as_u16()) });
                self.auth = Auth::Session { token, location };
                Ok(())
            }
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => {
                r.steps.push(Step { sent: sent.clone(), answer: format!("{} {msg}", status.as_u16()) });
                Err(PowerError::new(ErrorKind::Auth, format!("{sent}: {status}: the BMC refused the credentials")))
            }
            (s, _) => {
                // A session service that gives no token: basic auth it is.
                r.steps.push(Step { sent, answer: format!("{} no session ({msg}): basic auth", s.as_u16()) });
                self.auth = Auth::Basic;
                Ok(())
            }
        }
    }

    async fn logout(&mut self, r: &mut Report) {
        if let Auth::Session { location: Some(loc), .. } = &self.auth {
            let loc = loc.strip_prefix(&self.base).unwrap_or(loc).to_string();
            let answer = match self.request(Method::DELETE, &loc, None).await {
                Ok(resp) => resp.status().as_u16().to_string(),
                Err(e) => e.message,
            };
            r.steps.push(Step { sent: format!("DELETE {loc}"), answer });
        }
    }

    async fn get(&mut self, path: &str, r: &mut Report) -> Result<Value> {
        self.send(Method::GET, path, None, true, r).await
    }

    /// A request whose answer must be a success; retried (when `repeatable`) on 5xx and
    /// transport errors, with backoff, while the budget lasts.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
        repeatable: bool,
        r: &mut Report,
    ) -> Result<Value> {
        let sent = match &body {
            Some(b) => format!("{method} {path} {b}"),
            None => format!("{method} {path}"),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= TRIES;
            let resp = match self.request(method.clone(), path, body.as_ref()).await {
                Ok(resp) => resp,
                Err(e) => {
                    r.steps.push(Step { sent: sent.clone(), answer: e.message.clone() });
                    let again = e.kind == ErrorKind::Unreachable || (repeatable && e.kind == ErrorKind::Timeout);
                    if again && !last && self.pause(attempt).await {
                        continue;
                    }
                    return Err(at(&sent, e));
                }
            };
            let status = resp.status();
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    let e = transport(e);
                    r.steps.push(Step { sent: sent.clone(), answer: e.message.clone() });
                    return Err(at(&sent, e));
                }
            };
            if status.is_success() {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    r.steps.push(Step { sent, answer: status.as_u16().to_string() });
                    return Ok(Value::Null);
                }
                return match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) => {
                        r.steps.push(Step { sent, answer: format!("{} {}", status.as_u16(), brief(&v)) });
                        Ok(v)
                    }
                    Err(e) => {
                        r.steps.push(Step { sent: sent.clone(), answer: format!("{} undecodable", status.as_u16()) });
                        Err(PowerError::new(
                            ErrorKind::Garbage,
                            format!("{sent}: {status} but not JSON ({e}): {}", rj::error_message(&bytes)),
                        ))
                    }
                };
            }
            let msg = rj::error_message(&bytes);
            r.steps.push(Step { sent: sent.clone(), answer: format!("{} {msg}", status.as_u16()) });
            if status.is_server_error() && repeatable && !last && self.pause(attempt).await {
                continue;
            }
            let kind = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Auth,
                s if s.is_server_error() => ErrorKind::Bmc,
                _ => ErrorKind::Refused,
            };
            return Err(PowerError::new(kind, format!("{sent}: {status}: {msg}")));
        }
    }

    /// Wait before try `attempt + 1`; false when the budget would not allow it.
    async fn pause(&self, attempt: u32) -> bool {
        let wait = backoff(attempt - 1);
        match self.budget.next() {
            Some(left) if left > wait => {
                tokio::time::sleep(wait).await;
                true
            }
            _ => false,
        }
    }

    /// One HTTP exchange, authenticated; transport failures classified.
    async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<reqwest::Response> {
        let timeout =
            self.budget.next().ok_or_else(|| PowerError::new(ErrorKind::Timeout, "out of time for this action"))?;
        let mut req = self.http.request(method, format!("{}{path}", self.base)).timeout(timeout);
        req = match &self.auth {
            Auth::None => req,
            Auth::Basic => req.basic_auth(&self.creds.username, Some(&self.creds.password)),
            Auth::Session { token, .. } => req.header("X-Auth-Token", token),
        };
        if let Some(b) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.to_string());
        }
        req.send().await.map_err(transport)
    }
}

/// `what: error` for the operator.
fn at(sent: &str, e: PowerError) -> PowerError {
    // The session request's body holds the password: name it by its line only.
    let what = sent.split(" {").next().unwrap_or(sent);
    PowerError::new(e.kind, format!("{what}: {}", e.message))
}

fn transport(e: reqwest::Error) -> PowerError {
    let text = chain(&e);
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if text.contains("certificate") || text.contains("tls") || text.contains("TLS") {
        ErrorKind::Tls
    } else if e.is_connect() {
        ErrorKind::Unreachable
    } else {
        ErrorKind::Garbage
    };
    let hint = match kind {
        ErrorKind::Timeout => " (the BMC did not answer in time: bmc.timeout_secs)",
        ErrorKind::Tls => " (does bmc.ca_file hold the CA that signed the BMC's certificate?)",
        ErrorKind::Unreachable => " (is the BMC's address right and reachable from bootsvc?)",
        _ => "",
    };
    PowerError::new(kind, format!("{text}{hint}"))
}

/// What the timeline keeps of an answer: the power state when there is one, else its kind.
fn brief(v: &Value) -> String {
    if let Some(p) = v.get("PowerState").and_then(Value::as_str) {
        return format!("PowerState={p}");
    }
    if let Some(n) = v.get("Members").and_then(Value::as_array) {
        return format!("{} member(s)", n.len());
    }
    v.get("@odata.type").and_then(Value::as_str).unwrap_or("ok").to_string()
}
