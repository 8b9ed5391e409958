//! Fuzz target `http`: see `fhec_testsuite::fuzz::http`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fhec_testsuite::fuzz::http(data));
