//! Fuzz target: see [`pv_fuzz::cpus_option`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pv_fuzz::cpus_option(data));
