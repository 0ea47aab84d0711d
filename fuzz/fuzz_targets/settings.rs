#![no_main]
//! `cargo +nightly fuzz run settings`: see `copilot_server::fuzzing::settings` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| copilot_server::fuzzing::settings(data));
