#![no_main]
//! `cargo +nightly fuzz run safetensors`: see `copilot_engine::fuzzing::safetensors` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| copilot_engine::fuzzing::safetensors(data));
