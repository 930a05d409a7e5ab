//! HTTP service: iPXE scripts, artifacts, metadata, events, admin API, health, metrics.
