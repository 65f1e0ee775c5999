//! Fuzz target: see [`pv_fuzz::send_ipi`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pv_fuzz::send_ipi(data));
