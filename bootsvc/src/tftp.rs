//! TFTP: read-only, jailed to its root.
