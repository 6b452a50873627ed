//! See `restorefs_fuzz::btrfs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: restorefs_fuzz::allow_contained_panics(), |data: &[u8]| {
    restorefs_fuzz::btrfs(data)
});
