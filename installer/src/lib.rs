//! osie installer library.
