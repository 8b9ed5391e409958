//! Fuzz target `neuron_text`: see `fhec_testsuite::fuzz::neuron_text`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fhec_testsuite::fuzz::neuron_text(data));
