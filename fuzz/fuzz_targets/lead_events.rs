//! Fuzz target `lead_events`: the property is [`leadroute_tests::fuzz::lead_events`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadroute_tests::fuzz::lead_events(data));
