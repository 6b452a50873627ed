//! The vhd container: opened from the input and its disk sampled.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: restorefs_fuzz::allow_contained_panics(), |data: &[u8]| {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/vmdk"));
    restorefs_fuzz::container("vhd", data, dir);
});
