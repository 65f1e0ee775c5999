//! Fuzz target: see [`pv_fuzz::vm_config`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pv_fuzz::vm_config(data));
