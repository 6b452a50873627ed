//! See `restorefs_fuzz::lvm`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| restorefs_fuzz::lvm(data));
