//! Tests against qemu-img.
