//! Fuzz target `npy`: see `fhec_testsuite::fuzz::npy`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fhec_testsuite::fuzz::npy(data));
