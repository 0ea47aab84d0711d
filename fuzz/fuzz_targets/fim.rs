#![no_main]
//! `cargo +nightly fuzz run fim`: see `copilot_fim::fuzzing::fim` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| copilot_fim::fuzzing::fim(data));
