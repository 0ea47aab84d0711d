#![no_main]
//! `cargo +nightly fuzz run documents`: see `copilot_server::fuzzing::documents` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| copilot_server::fuzzing::documents(data));
