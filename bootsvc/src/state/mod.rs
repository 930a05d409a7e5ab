//! Events and per-machine state in an embedded, crash-safe store.
