//! End-to-end QEMU tests live in tests/.
