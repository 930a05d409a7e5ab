//! bootsvc's DHCPv6 server for the tests that run it over real sockets (`dhcp6_clients.rs`,
//! `flood.rs`): the site's config with `[dhcp6]` on. The client, ISC `dhclient -6`, is the
//! test kit's (`osie_testkit::dhcp::dhclient6`).

use super::Site;

/// Turn DHCPv6 on for `site` (not yet started) with `address` as bootsvc's IPv6 address.
/// The boot file URLs are IPv6, so HTTP listens on `[::]` (`check` refuses it otherwise).
pub fn enable(site: &Site, address: &str) {
    let mut text =
        std::fs::read_to_string(&site.config).unwrap().replace("listen = \"192.0.2.1:8080\"", "listen = \"[::]:8080\"");
    text.push_str(&format!("\n[dhcp6]\nenabled = true\naddress = \"{address}\"\n"));
    std::fs::write(&site.config, text).unwrap();
}
