//! iPXE script rendering.
