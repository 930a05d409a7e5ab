//! The status page (`/ui/`, `bootsvc/docs/ui.md`) against the real `bootsvc serve`: only on
//! the admin listener; nothing without a login (the page 401 with the login form, its JSON and
//! its event stream 401); a forged cookie refused; sessions of the admin and the read-only
//! token, kept over a restart, ended by logout; actions only with the session's CSRF token
//! and only from an admin session; the stream carrying an event as it is stored. Then in a
//! real browser (headless Chromium through DevTools): what a machine sent with HTML and
//! control characters in it shows as text, runs nothing, and updates without a reload, also
//! across a restart of bootsvc.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Options, Site, CLIENTS, RO_TOKEN, TOKEN};
use osie_testkit::browser::{self, Browser};
use osie_testkit::site::Resp;

const MAC: &str = "52:54:00:00:0e:01";

fn record() -> String {
    format!(
        r#"{{"hostname":"web-01","macs":["{MAC}"],"ip":{{"address":"{}","prefix":24}},"netboot":{{"allow":true}},"install":{{"image":{{"name":"debian-12"}}}}}}"#,
        CLIENTS[0]
    )
}

fn event(phase: &str, seq: u64, message: &str, extra: &str) -> String {
    event_of("run-1", phase, seq, message, extra)
}

fn event_of(run: &str, phase: &str, seq: u64, message: &str, extra: &str) -> String {
    let msg = serde_json::to_string(message).unwrap();
    format!(
        r#"{{"machine":"{MAC}","phase":"{phase}","time":"2026-01-01T00:00:00Z","run_id":"{run}","seq":{seq},"message":{msg}{extra}}}"#
    )
}

fn post_event(site: &Site, body: &str) {
    let r = site.post_json_as(CLIENTS[0], "/events", body);
    assert_eq!(r.status, 200, "{}", r.text());
}

fn cookie(id: &str) -> String {
    format!("Cookie: osie_session={id}")
}

/// Log in with `token`: the answer, and the session id from its `Set-Cookie`.
fn login(site: &Site, token: &str) -> (Resp, Option<String>) {
    let r = site.admin_curl(&["--data-urlencode", &format!("token={token}")], "/ui/login");
    let id = r
        .header("set-cookie")
        .and_then(|c| c.split(';').next().and_then(|kv| kv.trim().strip_prefix("osie_session=")).map(str::to_string));
    (r, id)
}

fn get(site: &Site, id: &str, path: &str) -> Resp {
    site.admin_curl(&["-H", &cookie(id)], path)
}

fn csrf(site: &Site, id: &str) -> String {
    let r = get(site, id, "/ui/api/session");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["csrf"].as_str().unwrap().to_string()
}

fn post(site: &Site, id: &str, csrf: Option<&str>, path: &str) -> Resp {
    let c = cookie(id);
    let h = csrf.map(|t| format!("X-Osie-Csrf: {t}"));
    let mut args = vec!["-X", "POST", "-H", c.as_str()];
    if let Some(h) = &h {
        args.extend(["-H", h.as_str()]);
    }
    site.admin_curl(&args, path)
}

#[test]
fn status_page_needs_a_session_and_actions_its_csrf_token() {
    if !common::prerequisites("status_page_needs_a_session_and_actions_its_csrf_token") {
        return;
    }
    let mut site = Site::new(Options { read_only: true, ..Options::default() });
    site.machine("web-01", &record());
    site.start();

    // Not on the machines' listener, logged in or not.
    for path in ["/ui/", "/ui/login", "/ui/app.js", "/ui/api/machines", "/ui/api/stream"] {
        assert_eq!(site.get(path).status, 404, "machines' listener {path}");
    }
    // Without a session: the page is the login form (401), the JSON and the stream 401.
    let r = site.admin_curl(&[], "/ui/");
    assert_eq!(r.status, 401);
    assert!(r.text().contains("action=\"/ui/login\""), "{}", r.text());
    assert!(r.header("content-security-policy").is_some_and(|c| c.contains("script-src 'self'")), "{}", r.headers);
    for path in ["/ui/api/machines", "/ui/api/stream", &format!("/ui/api/machines/{MAC}/events"), "/ui/api/timing"] {
        let r = site.admin_curl(&[], path);
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert!(!r.text().contains("web-01"), "{path} shows nothing: {}", r.text());
    }
    // The bearer token of the admin API is not a session.
    let bearer = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(site.admin_curl(&["-H", &bearer], "/ui/api/machines").status, 401);
    // Forged and malformed cookies.
    for forged in ["0".repeat(64), "f".repeat(64), "x".into(), String::new(), format!("{}'; --", "a".repeat(64))] {
        assert_eq!(get(&site, &forged, "/ui/api/machines").status, 401, "{forged:?}");
        assert_eq!(get(&site, &forged, "/ui/").status, 401, "{forged:?}");
    }
    // A wrong token: the form again, 401, no cookie.
    let (r, id) = login(&site, "not-the-token-0123456789");
    assert_eq!((r.status, id), (401, None));
    assert!(r.text().contains("Wrong token."));

    // The read-only token: a session that sees and cannot act.
    let (r, ro) = login(&site, RO_TOKEN);
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location").as_deref(), Some("/ui/"));
    let set = r.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui/", "Max-Age="] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    let ro = ro.unwrap();
    assert_eq!(get(&site, &ro, "/ui/").status, 200);
    let list = get(&site, &ro, "/ui/api/machines");
    assert_eq!(list.status, 200);
    assert_eq!(list.json()[0]["hostname"], "web-01");
    assert_eq!(get(&site, &ro, "/ui/api/session").json()["role"], "read-only");
    let ro_csrf = csrf(&site, &ro);
    let reinstall = format!("/ui/api/machines/{MAC}/reinstall");
    let r = post(&site, &ro, Some(&ro_csrf), &reinstall);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("read-only"), "{}", r.text());

    // The admin token: actions with the session's CSRF token only.
    let (_, admin) = login(&site, TOKEN);
    let admin = admin.unwrap();
    let token = csrf(&site, &admin);
    assert_ne!(token, ro_csrf);
    assert_eq!(post(&site, &admin, None, &reinstall).status, 403, "no CSRF token");
    assert_eq!(post(&site, &admin, Some(&ro_csrf), &reinstall).status, 403, "another session's CSRF token");
    assert_eq!(post(&site, &admin, Some("0"), &reinstall).status, 403);
    let power = format!("/ui/api/machines/{MAC}/power/cycle");
    assert_eq!(post(&site, &admin, None, &power).status, 403, "power without CSRF token");
    let r = post(&site, &admin, Some(&token), &reinstall);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"]["status"], "reinstall-pending");
    // No BMC in the record: the power action is refused by the power code, not by the page.
    assert_eq!(post(&site, &admin, Some(&token), &power).status, 409);
    // A GET does nothing on an action route.
    assert!(matches!(get(&site, &admin, &reinstall).status, 403 | 405));

    // The stream: the list first, then each stored event as it comes.
    let out = site.path("stream.txt");
    let mut curl = site
        .ns
        .cmd("curl")
        .args(["-sN", "--max-time", "9", "-H", &cookie(&ro), "-o"])
        .arg(&out)
        .arg("http://127.0.0.1:8081/ui/api/stream")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(&out).unwrap_or_default().contains("event: machines") {
        assert!(start.elapsed() < Duration::from_secs(5), "no list on the stream");
        std::thread::sleep(Duration::from_millis(50));
    }
    post_event(&site, &event("booted-installer", 0, "installer up", ""));
    let stored = Instant::now();
    while !std::fs::read_to_string(&out).unwrap_or_default().contains("\"phase\":\"booted-installer\"") {
        assert!(stored.elapsed() < Duration::from_secs(4), "the event never reached the stream");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("event stored → on the stream in {:?}", stored.elapsed());
    // Past http.request_timeout_secs (5 s here): the stream is not a request that times out.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(start.elapsed()));
    post_event(&site, &event("network", 1, "after the request timeout", ""));
    let late = Instant::now();
    while !std::fs::read_to_string(&out).unwrap_or_default().contains("after the request timeout") {
        assert!(late.elapsed() < Duration::from_secs(3), "the stream ended at the request timeout");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = curl.wait();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("retry: 2000\n\nevent: machines\ndata: [{"), "{text}");
    assert!(text.contains("event: machine\ndata: {"), "{text}");

    // Sessions outlive a restart (kept hashed under state.dir) and end at logout.
    site.stop();
    let kept = std::fs::read_to_string(site.path("state/ui-sessions.json")).unwrap();
    assert!(!kept.contains(&admin) && !kept.contains(TOKEN) && !kept.contains(RO_TOKEN), "{kept}");
    site.start();
    assert_eq!(get(&site, &admin, "/ui/api/machines").status, 200, "the session survived the restart");
    assert_eq!(post(&site, &admin, None, "/ui/api/logout").status, 403, "logout needs the CSRF token too");
    assert_eq!(post(&site, &admin, Some(&token), "/ui/api/logout").status, 200);
    assert_eq!(get(&site, &admin, "/ui/api/machines").status, 401, "logged out");
    assert_eq!(get(&site, &ro, "/ui/api/machines").status, 200, "the other session carries on");

    // Guessing tokens at the login form is the admin API's back-off too: locked out (429).
    let statuses: Vec<u16> = (0..7).map(|_| login(&site, "guessed-token-0123456789").0.status).collect();
    assert_eq!(statuses, [401, 401, 401, 401, 401, 401, 429], "5 free, the 6th locks out");
    let (r, id) = login(&site, TOKEN);
    assert_eq!((r.status, id), (429, None), "a right token during the lock-out gains nothing");
    assert!(r.header("retry-after").is_some(), "{}", r.headers);
}

/// What a machine may put in front of an operator: markup, script, terminal escapes, bidi
/// overrides, in its messages and its error chain.
const HOSTILE: &str =
    "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">\u{1b}[31mred\u{7}\u{202e}txt";

#[test]
fn status_page_in_a_browser_shows_what_machines_send_as_text() {
    let test = "status_page_in_a_browser_shows_what_machines_send_as_text";
    if !common::prerequisites(test) {
        return;
    }
    if browser::chromium().is_none() && !osie_testkit::require_tools(test, &["chromium"]) {
        return;
    }
    let mut site = Site::new(Options::default());
    site.machine("web-01", &record());
    site.start();
    post_event(&site, &event("booted-installer", 0, HOSTILE, ""));
    let chain = r#","error":["writing the image: <b>disk</b> \u0007 gone","<iframe src=/x>"]"#;
    post_event(&site, &event("failed", 1, "failed </td></tr><tr><td>", chain));

    // The installer's log (the trace helper's `POST /log`), with the same kind of lines.
    let log = serde_json::json!({
        "machine": MAC, "run_id": "run-1", "seq": 0,
        "lines": ["osie: starting", HOSTILE, "<style>body{display:none}</style>\u{8}\u{8}done"]
    });
    let r = site.post_json_as(CLIENTS[0], "/log", &log.to_string());
    assert_eq!(r.status, 200, "{}", r.text());

    let mut b = Browser::launch(&site.ns, 1280, 860).unwrap();
    let ui = "http://127.0.0.1:8081/ui/";
    // A forged cookie: the login form, and the API and stream refuse the page's own requests.
    b.set_cookie(ui, "osie_session", &"ab".repeat(32)).unwrap();
    b.goto(ui).unwrap();
    assert_eq!(b.eval("document.querySelector('form[action=\"/ui/login\"]') !== null").unwrap(), true);
    let statuses = b
        .eval(
            "Promise.all(['/ui/api/machines', '/ui/api/stream', '/ui/api/session']
               .map(u => fetch(u).then(r => r.status)))",
        )
        .unwrap();
    assert_eq!(statuses, serde_json::json!([401, 401, 401]));

    // Log in through the form (the forged cookie gone first: it would stay beside the real one).
    b.call("Network.deleteCookies", serde_json::json!({ "name": "osie_session", "url": ui })).unwrap();
    b.eval(&format!("document.getElementById('token').value = '{TOKEN}'; document.forms[0].submit(); true")).unwrap();
    b.wait_until("the machine list", Duration::from_secs(20), "document.querySelector('tr[data-mac]') !== null")
        .unwrap();
    let cookies = b.cookies(ui).unwrap();
    let c = cookies.iter().find(|c| c["name"] == "osie_session").expect("the session cookie");
    assert_eq!((c["httpOnly"].as_bool(), c["sameSite"].as_str()), (Some(true), Some("Strict")), "{c}");
    assert_eq!(b.eval("document.cookie").unwrap(), "", "the page's script cannot read the session");
    // The CSRF token is needed from the page itself too.
    let st =
        b.eval(&format!("fetch('/ui/api/machines/{MAC}/reinstall', {{method: 'POST'}}).then(r => r.status)")).unwrap();
    assert_eq!(st, 403);

    // The machine's page: the hostile text, shown as text (checked in the DOM, not the source).
    b.eval("window.marker = 'same page'; true").unwrap();
    b.eval(&format!("location.hash = '#/m/{MAC}'; true")).unwrap();
    b.wait_until("the events table", Duration::from_secs(20), "document.querySelector('#event-table') !== null")
        .unwrap();
    let shown =
        b.eval("document.querySelector('#event-table tr[data-phase=\"booted-installer\"] .msg').textContent").unwrap();
    let shown = shown.as_str().unwrap();
    assert!(shown.contains("<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">"), "{shown}");
    assert!(shown.contains("\\x1b[31mred\\x07") && shown.contains("\\u202e"), "escapes shown: {shown:?}");
    assert!(!shown.chars().any(|c| c.is_control() || c == '\u{202e}'), "{shown:?}");
    assert_eq!(b.eval("typeof window.pwned").unwrap(), "undefined", "nothing the machine sent ran");
    assert_eq!(
        b.eval("document.querySelectorAll('#main script, #main img, #main iframe, #main b').length").unwrap(),
        0
    );
    let errors = b.eval("document.querySelector('#errors').textContent").unwrap();
    let errors = errors.as_str().unwrap();
    assert!(errors.contains("<b>disk</b> \\x07 gone") && errors.contains("<iframe src=/x>"), "{errors}");
    assert_eq!(b.eval("document.querySelectorAll('#event-table tbody tr').length").unwrap(), 2, "no injected row");
    // The installer's log pane and the boot trace pane: the same, as text.
    let log = b
        .wait_until(
            "the installer log pane",
            Duration::from_secs(10),
            "document.querySelector('#log-text')?.textContent",
        )
        .unwrap();
    let log = log.as_str().unwrap();
    // (bootsvc keeps log lines with their control characters already escaped, `\u{1b}`; the
    // page escapes what is left, the bidi override.)
    assert!(log.contains("<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\">"), "{log}");
    assert!(log.contains("[31mred") && log.contains("\\u202etxt"), "{log}");
    assert!(log.contains("<style>body{display:none}</style>") && log.contains("done"), "{log}");
    assert!(!log.chars().any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'), "{log:?}");
    let trace = b
        .wait_until(
            "the boot trace pane",
            Duration::from_secs(10),
            "document.querySelector('#trace-text')?.textContent",
        )
        .unwrap();
    assert!(trace.as_str().unwrap().contains("diagnosis"), "{trace}");
    assert_eq!(b.eval("document.querySelectorAll('#main script, #main style, #main img').length").unwrap(), 0);
    assert_eq!(b.eval("typeof window.pwned").unwrap(), "undefined");

    // Live: a new run's events change the page without a reload.
    post_event(&site, &event_of("run-2", "booted-installer", 0, "again", ""));
    b.wait_until(
        "the phase to change live",
        Duration::from_secs(10),
        "document.querySelector('#phase').textContent === 'booted-installer'",
    )
    .unwrap();
    assert_eq!(b.eval("window.marker").unwrap(), "same page", "updated without a reload");

    // bootsvc restarts: the page reconnects by itself (the session is kept) and follows again.
    site.stop();
    b.wait_until(
        "the page to notice",
        Duration::from_secs(10),
        "document.querySelector('#conn').textContent !== 'live'",
    )
    .unwrap();
    site.start();
    b.wait_until(
        "the page to reconnect",
        Duration::from_secs(15),
        "document.querySelector('#conn').textContent === 'live'",
    )
    .unwrap();
    post_event(&site, &event_of("run-2", "network", 1, "dhcp ok", ""));
    b.wait_until(
        "the event after the restart",
        Duration::from_secs(10),
        "document.querySelector('#phase').textContent === 'network'",
    )
    .unwrap();
    assert_eq!(b.eval("window.marker").unwrap(), "same page", "no reload through the restart");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui/hostile-text.png");
    let n = b.screenshot(&shot).unwrap();
    eprintln!("screenshot: {} ({n} bytes)", shot.display());
    b.eval("document.getElementById('trace').scrollIntoView(); true").unwrap();
    b.screenshot(&shot.with_file_name("hostile-text-panes.png")).unwrap();
}
