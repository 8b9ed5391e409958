//! Fuzz target `ir_text`: see `fhec_testsuite::fuzz::ir_text`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fhec_testsuite::fuzz::ir_text(data));
