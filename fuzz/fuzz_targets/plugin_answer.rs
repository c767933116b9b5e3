//! Fuzz target `plugin_answer`: the property is [`leadroute_tests::fuzz::plugin_answer`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadroute_tests::fuzz::plugin_answer(data));
