//! Fuzz target: see [`pv_fuzz::steal_time`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pv_fuzz::steal_time(data));
