//! Header values of remote images (Content-Range, HTTP dates).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    restorefs_fuzz::http_headers(data);
});
