//! Real BMCs for the power tests, all inside the site's network namespace: a private
//! `libvirtd` (its own mount namespace: its sockets, state and domain definitions on tmpfs,
//! no default network, QEMU in TCG) with a QEMU domain, in front of it sushy-tools' Redfish
//! emulator (TLS from a CA made here, basic auth) or VirtualBMC (IPMI); and small bad BMCs
//! (garbage, 500, silent) served by the test itself. Used by `bootsvc/tests/power.rs` and
//! the `reinstall --power` scenario of `qemu-tests`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::proc::{wait_for, ChildGuard};
use crate::Netns;

/// The Python environment `scripts/setup` makes (sushy-tools, VirtualBMC): `OSIE_PYENV`, or
/// `build/pyenv` of the checkout.
pub fn pyenv() -> PathBuf {
    std::env::var_os("OSIE_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/pyenv"))
}

/// Can the libvirt-backed tests run here? (Skips with the reason otherwise.)
pub fn prerequisites(test: &str, also: &[&str]) -> bool {
    let tools = [&["curl", "ip", "libvirtd", "virsh", "qemu-system-x86_64", "openssl", "unshare"][..], also].concat();
    crate::require_root(test)
        && crate::require_tools(test, &tools)
        && crate::require_file(test, &pyenv().join("bin/sushy-emulator"), "scripts/setup")
}

const QEMU_CONF: &str = r#"user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
"#;

/// A libvirtd of the test's own and its domain `name` (shut off, booting from disk first).
pub struct Libvirt {
    pub dir: PathBuf,
    pub uri: String,
    pub name: String,
    daemon: Option<ChildGuard>,
    _run: tempfile::TempDir,
}

impl Libvirt {
    /// `nic`: the domain's NIC, (MAC, a tap already in the namespace). A small domain
    /// (128 MiB, no disk), enough for power and boot-order tests.
    pub fn start(ns: &Netns, dir: &Path, name: &str, nic: (&str, &str)) -> Libvirt {
        let mut lv = Libvirt::daemon(ns, dir);
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>\
             <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
             <interface type='ethernet'><mac address='{}'/><target dev='{}' managed='no'/><model type='e1000'/></interface>\
             <serial type='file'><source path='{}/serial.log'/></serial></devices></domain>",
            nic.0,
            nic.1,
            lv.dir.display()
        );
        lv.define(name, &xml);
        lv
    }

    /// libvirtd alone, no domain yet ([`Libvirt::define`]).
    pub fn daemon(ns: &Netns, dir: &Path) -> Libvirt {
        let dir = dir.join("libvirt");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("qemu.conf"), QEMU_CONF).unwrap();
        // Its sockets: a short path of their own (a Unix socket's path has 108 bytes).
        let run_dir = tempfile::Builder::new().prefix("osie-lv-").tempdir().unwrap();
        let run = run_dir.path().to_path_buf();
        std::fs::write(
            dir.join("libvirtd.conf"),
            format!(
                "unix_sock_dir = \"{}\"\nunix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n\
                 log_outputs = \"3:file:{}/libvirtd.log\"\n",
                run.display(),
                dir.display()
            ),
        )
        .unwrap();
        // Everything libvirtd keeps, private to it: no other libvirt is touched, and the
        // packaged default network (192.168.122.0/24) is not there to be started.
        let script = format!(
            "set -e\nfor d in /etc/libvirt/qemu /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do \
             mkdir -p $d; mount -t tmpfs tmpfs $d; done\nmount --bind {dir}/qemu.conf /etc/libvirt/qemu.conf\n\
             exec libvirtd --config {dir}/libvirtd.conf --pid-file {dir}/libvirtd.pid\n",
            dir = dir.display()
        );
        let log = std::fs::File::create(dir.join("libvirtd.out")).unwrap();
        let mut cmd = ns.cmd("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]).stdout(Stdio::null()).stderr(log);
        let daemon = ChildGuard::spawn("libvirtd", &mut cmd).unwrap();
        let uri = format!("qemu:///system?socket={}/libvirt-sock", run.display());
        let lv = Libvirt { dir, uri, name: String::new(), daemon: Some(daemon), _run: run_dir };
        wait_for("libvirtd's socket", Duration::from_secs(20), || lv.virsh_ok(&["version"]).then_some(()))
            .unwrap_or_else(|e| panic!("{e:#}: {}", lv.log()));
        lv
    }

    /// Define the domain `name` from `xml` (shut off); this is the domain the other calls
    /// act on.
    pub fn define(&mut self, name: &str, xml: &str) {
        let file = self.dir.join(format!("{name}.xml"));
        std::fs::write(&file, xml).unwrap();
        self.virsh(&["define", &file.to_string_lossy()]);
        self.name = name.to_string();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("libvirtd.out")).unwrap_or_default()
            + &std::fs::read_to_string(self.dir.join("libvirtd.log")).unwrap_or_default()
    }

    fn virsh_ok(&self, args: &[&str]) -> bool {
        Command::new("virsh").arg("-c").arg(&self.uri).args(args).output().is_ok_and(|o| o.status.success())
    }

    /// `virsh <args>`: its stdout; panics with its stderr when it fails.
    pub fn virsh(&self, args: &[&str]) -> String {
        let o = Command::new("virsh").arg("-c").arg(&self.uri).args(args).output().unwrap();
        assert!(o.status.success(), "virsh {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `running`, `shut off`…
    pub fn state(&self) -> String {
        self.virsh(&["domstate", &self.name])
    }

    /// Wait until the domain is in `state`.
    pub fn wait_state(&self, state: &str) {
        wait_for(&format!("domain {} {state}", self.name), Duration::from_secs(30), || {
            (self.state() == state).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#} (it is {})", self.state()));
    }

    /// What the persistent definition boots first: `network` when the NIC has boot order 1
    /// (how sushy-tools sets a network boot), else the `<os>` element's first `boot dev`.
    pub fn first_boot(&self) -> String {
        let xml = self.virsh(&["dumpxml", "--inactive", &self.name]);
        let nic = xml.split("<interface").nth(1).and_then(|s| s.split("</interface>").next()).unwrap_or("");
        if nic.contains("<boot order='1'/>") {
            return "network".into();
        }
        let os = xml.split("<os").nth(1).and_then(|s| s.split("</os>").next()).unwrap_or("");
        os.split("<boot dev='").nth(1).and_then(|s| s.split('\'').next()).unwrap_or("none").to_string()
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        // The domain's QEMU first (a killed libvirtd would leave it running), then libvirtd.
        let _ = Command::new("virsh").arg("-c").arg(&self.uri).args(["destroy", &self.name]).output();
        drop(self.daemon.take());
    }
}

/// A CA and a server certificate for `ip`, signed by it; and another CA that signed
/// nothing (the "unknown CA"). Paths: (ca.pem, other-ca.pem, cert.pem, key.pem).
pub fn certificates(dir: &Path, ip: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let d = dir.join("pki");
    std::fs::create_dir_all(&d).unwrap();
    let ssl = |args: &[&str]| {
        let o = Command::new("openssl").current_dir(&d).args(args).output().unwrap();
        assert!(o.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    };
    for ca in ["ca", "other-ca"] {
        let (key, pem, subj) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN=osie test {ca}"));
        ssl(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem, "-days", "2", "-subj",
            &subj,
        ]);
    }
    ssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "bmc.key",
        "-out",
        "bmc.csr",
        "-subj",
        &format!("/CN={ip}"),
    ]);
    std::fs::write(d.join("ext"), format!("subjectAltName=IP:{ip}\n")).unwrap();
    ssl(&[
        "x509",
        "-req",
        "-in",
        "bmc.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "bmc.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    (d.join("ca.pem"), d.join("other-ca.pem"), d.join("bmc.pem"), d.join("bmc.key"))
}

/// A credentials file (mode 0600) outside every directory bootsvc serves.
pub fn credentials(dir: &Path, name: &str, user: &str, password: &str) -> PathBuf {
    let d = dir.join("bmc-credentials");
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join(name);
    std::fs::write(&f, serde_json::json!({"username": user, "password": password}).to_string()).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

/// sushy-tools' emulator on `ip:port` (TLS with `cert`/`key`, one user), in front of `lv`.
pub fn sushy(
    ns: &Netns,
    lv: &Libvirt,
    ip: &str,
    port: u16,
    tls: (&Path, &Path),
    user: &str,
    password: &str,
) -> ChildGuard {
    let py = pyenv().join("bin/python");
    let hash = Command::new(&py)
        .args([
            "-c",
            "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())",
            password,
        ])
        .output()
        .unwrap();
    assert!(hash.status.success(), "bcrypt: {}", String::from_utf8_lossy(&hash.stderr));
    let htpasswd = lv.dir.join("htpasswd");
    std::fs::write(&htpasswd, format!("{user}:{}", String::from_utf8_lossy(&hash.stdout).trim())).unwrap();
    let conf = lv.dir.join("sushy.conf");
    std::fs::write(
        &conf,
        format!(
            "SUSHY_EMULATOR_LISTEN_IP = '{ip}'\nSUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n\
             SUSHY_EMULATOR_AUTH_FILE = '{}'\nSUSHY_EMULATOR_LIBVIRT_URI = '{}'\n",
            tls.0.display(),
            tls.1.display(),
            htpasswd.display(),
            lv.uri
        ),
    )
    .unwrap();
    let log = std::fs::File::create(lv.dir.join("sushy.log")).unwrap();
    let mut cmd = ns.cmd(pyenv().join("bin/sushy-emulator"));
    cmd.arg("--config").arg(&conf).stdout(log.try_clone().unwrap()).stderr(log);
    let mut child = ChildGuard::spawn("sushy-emulator", &mut cmd).unwrap();
    wait_for("sushy-emulator to listen", Duration::from_secs(30), || {
        if child.check_running().is_err() {
            panic!("sushy-emulator exited: {}", std::fs::read_to_string(lv.dir.join("sushy.log")).unwrap_or_default());
        }
        let o = ns.run(
            "curl",
            &["-sk", "-o", "/dev/null", "-w", "%{http_code}", &format!("https://{ip}:{port}/redfish/v1/")],
        );
        o.ok().filter(|o| o.stdout == b"200").map(|_| ())
    })
    .unwrap();
    child
}

/// VirtualBMC (IPMI over LAN) on `ip:port` for `lv`'s domain, one user: its daemon, whose
/// control port is on the namespace's loopback.
pub fn virtualbmc(ns: &Netns, lv: &Libvirt, ip: &str, port: u16, user: &str, password: &str) -> ChildGuard {
    let d = lv.dir.join("vbmc");
    std::fs::create_dir_all(d.join("conf")).unwrap();
    let conf = d.join("virtualbmc.conf");
    std::fs::write(
        &conf,
        format!(
            "[default]\nconfig_dir = {0}/conf\npid_file = {0}/vbmcd.pid\nserver_port = 50891\n[log]\nlogfile = {0}/vbmc.log\n",
            d.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(d.join("vbmcd.out")).unwrap();
    let mut cmd = ns.cmd(pyenv().join("bin/vbmcd"));
    cmd.arg("--foreground").env("VIRTUALBMC_CONFIG", &conf).stdout(log.try_clone().unwrap()).stderr(log);
    let mut daemon = ChildGuard::spawn("vbmcd", &mut cmd).unwrap();
    let vbmc =
        |args: &[&str]| ns.cmd(pyenv().join("bin/vbmc")).args(args).env("VIRTUALBMC_CONFIG", &conf).output().unwrap();
    wait_for("vbmcd to answer", Duration::from_secs(30), || {
        daemon
            .check_running()
            .unwrap_or_else(|e| panic!("{e:#}: {}", std::fs::read_to_string(d.join("vbmcd.out")).unwrap_or_default()));
        vbmc(&["list"]).status.success().then_some(())
    })
    .unwrap();
    let port = port.to_string();
    for args in [
        &[
            "add",
            &lv.name,
            "--address",
            ip,
            "--port",
            &port,
            "--username",
            user,
            "--password",
            password,
            "--libvirt-uri",
            &lv.uri,
        ][..],
        &["start", &lv.name][..],
    ] {
        let o = vbmc(args);
        assert!(o.status.success(), "vbmc {}: {}", args[0], String::from_utf8_lossy(&o.stderr));
    }
    wait_for("VirtualBMC to answer IPMI", Duration::from_secs(30), || {
        let o = ns
            .cmd("ipmitool")
            .args([
                "-I", "lanplus", "-H", ip, "-p", &port, "-U", user, "-E", "-N", "1", "-R", "1", "chassis", "power",
                "status",
            ])
            .env("IPMI_PASSWORD", password)
            .output()
            .ok()?;
        o.status.success().then_some(())
    })
    .unwrap();
    daemon
}

/// How a bad BMC behaves.
#[derive(Clone, Copy)]
pub enum Bad {
    /// 200 with HTML where JSON is expected (the service root is fine).
    Garbage,
    /// 500 to everything but the service root.
    Error500,
    /// Accepts, reads, never answers.
    Silent,
}

/// A bad HTTP "BMC" on `ip:port` inside `ns`, serving until the test ends.
pub fn bad_bmc(ns: &Netns, ip: &str, port: u16, how: Bad) {
    let addr = format!("{ip}:{port}");
    let (tx, rx) = std::sync::mpsc::channel();
    let _serving = ns.spawn(move || {
        let l = TcpListener::bind(&addr)?;
        tx.send(()).ok();
        let mut held = Vec::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let root = head.starts_with("GET /redfish/v1/ ");
            let (status, body) = match how {
                Bad::Silent => {
                    held.push(s); // never answered, never closed
                    continue;
                }
                _ if root => ("200 OK", r#"{"Systems":{"@odata.id":"/redfish/v1/Systems"}}"#.to_string()),
                Bad::Garbage => ("200 OK", "<html><body>Welcome to the BMC</body></html>".to_string()),
                Bad::Error500 => (
                    "500 Internal Server Error",
                    r#"{"error":{"code":"Base.1.0.InternalError","message":"The BMC is busy"}}"#.to_string(),
                ),
            };
            let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("the bad BMC listens");
}

/// A Redfish service with sessions on `ip:port` (plain HTTP), for the session login that
/// sushy-tools does not offer: the root links `/redfish/v1/SessionService/Sessions`, a POST
/// there with `user`/`password` answers 201 with `X-Auth-Token` and `Location`, the system
/// (`/redfish/v1/Systems/1`, on) answers that token only, a DELETE of the session ends it.
/// Returns its log: one line per request, `METHOD path auth` (`token`, `basic`, `none`).
pub fn session_bmc(ns: &Netns, ip: &str, port: u16, user: &str, password: &str) -> Arc<Mutex<Vec<String>>> {
    let addr = format!("{ip}:{port}");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (user, password, seen) = (user.to_string(), password.to_string(), Arc::clone(&log));
    let (tx, rx) = std::sync::mpsc::channel();
    let _serving = ns.spawn(move || {
        let l = TcpListener::bind(&addr)?;
        tx.send(()).ok();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let Some((head, body)) = read_request(&mut s) else { continue };
            let line = head.lines().next().unwrap_or_default().to_string();
            let mut parts = line.split(' ');
            let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            let lower = head.to_ascii_lowercase();
            let token = lower.contains("\r\nx-auth-token: tok-1");
            let auth = if token { "token" } else if lower.contains("\r\nauthorization: basic") { "basic" } else { "none" };
            seen.lock().unwrap().push(format!("{method} {path} {auth}"));
            let login = serde_json::from_slice::<serde_json::Value>(&body).ok();
            let good = login.as_ref().is_some_and(|v| v["UserName"] == user.as_str() && v["Password"] == password.as_str());
            let system = r##"{"PowerState":"On","Manufacturer":"Session BMC","Actions":{"#ComputerSystem.Reset":{"target":"/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"}}}"##;
            let (status, extra, body) = match (method, path) {
                ("GET", "/redfish/v1/") => ("200 OK", String::new(), r#"{"Links":{"Sessions":{"@odata.id":"/redfish/v1/SessionService/Sessions"}}}"#),
                ("POST", "/redfish/v1/SessionService/Sessions") if good => (
                    "201 Created",
                    "X-Auth-Token: tok-1\r\nLocation: /redfish/v1/SessionService/Sessions/1\r\n".to_string(),
                    "{}",
                ),
                (_, _) if !token => ("401 Unauthorized", String::new(), r#"{"error":{"message":"no session"}}"#),
                ("GET", "/redfish/v1/Systems") => ("200 OK", String::new(), r#"{"Members":[{"@odata.id":"/redfish/v1/Systems/1"}]}"#),
                ("GET", "/redfish/v1/Systems/1") => ("200 OK", String::new(), system),
                ("DELETE", "/redfish/v1/SessionService/Sessions/1") => ("204 No Content", String::new(), ""),
                _ => ("404 Not Found", String::new(), r#"{"error":{"message":"no such resource"}}"#),
            };
            let _ = write!(s, "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("the session BMC listens");
    log
}

/// One HTTP/1.1 request: its head and its body (by Content-Length).
fn read_request(s: &mut std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = s.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < end + len {
        let n = s.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((head, buf[end..end + len].to_vec()))
}
