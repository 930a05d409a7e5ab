//! DHCP: classification, reply building (pure), and the socket loops.
