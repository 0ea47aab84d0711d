#![no_main]
//! `cargo +nightly fuzz run gguf`: see `copilot_engine::fuzzing::gguf` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| copilot_engine::fuzzing::gguf(data));
