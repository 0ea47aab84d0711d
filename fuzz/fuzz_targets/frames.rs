#![no_main]
//! `cargo +nightly fuzz run frames`: see `copilot_server::fuzzing::frames` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| copilot_server::fuzzing::frames(data));
