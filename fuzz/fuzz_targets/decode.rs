//! libFuzzer target: arbitrary datagrams through `radacctd_fuzz::exercise` (decode, attribute
//! and VSA walks, verifiers, re-encode round trip). It must not do anything but call it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    radacctd_fuzz::exercise(data);
});
