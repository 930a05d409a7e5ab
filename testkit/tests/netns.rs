//! The test kit's own checks: namespaces are really separate and really removed.

use std::net::UdpSocket;
use std::time::Duration;

use osie_testkit::{require_root, require_tools, Pair};

#[test]
fn pair_connects_and_cleans_up() {
    if !require_root("pair_connects_and_cleans_up") || !require_tools("pair_connects_and_cleans_up", &["ip"]) {
        return;
    }
    let pair = Pair::new("192.0.2.1/24").unwrap();
    pair.client.ip(&["addr", "add", "192.0.2.2/24", "dev", &pair.client_if]).unwrap();
    let names = (pair.server.name().to_string(), pair.client.name().to_string());

    // A UDP socket bound inside the server namespace receives what the client sends.
    let server = pair.server.spawn(|| {
        let s = UdpSocket::bind("192.0.2.1:9999")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 16];
        let (n, from) = s.recv_from(&mut buf)?;
        Ok((buf[..n].to_vec(), from))
    });
    std::thread::sleep(Duration::from_millis(200));
    let client = pair.client.spawn(|| {
        let s = UdpSocket::bind("192.0.2.2:0")?;
        s.send_to(b"hello", "192.0.2.1:9999")?;
        Ok(())
    });
    client.join().unwrap().unwrap();
    let (got, from) = server.join().unwrap().unwrap();
    assert_eq!(got, b"hello");
    assert_eq!(from.ip().to_string(), "192.0.2.2");

    // The address does not exist outside the namespaces.
    assert!(UdpSocket::bind("192.0.2.1:0").is_err());

    drop(pair);
    let list =
        String::from_utf8(std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap();
    assert!(!list.contains(&names.0) && !list.contains(&names.1), "namespaces left behind: {list}");
}
