//! Fuzz target: see [`pv_fuzz::api_request`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pv_fuzz::api_request(data));
