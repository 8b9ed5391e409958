//! Fuzz target `onnx`: see `fhec_testsuite::fuzz::onnx`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fhec_testsuite::fuzz::onnx(data));
