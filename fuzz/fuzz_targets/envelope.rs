//! Fuzz target `envelope`: see `fhec_testsuite::fuzz::envelope`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fhec_testsuite::fuzz::envelope(data));
