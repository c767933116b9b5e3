//! Fuzz target `lead_intake`: the property is [`leadroute_tests::fuzz::lead_intake`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadroute_tests::fuzz::lead_intake(data));
