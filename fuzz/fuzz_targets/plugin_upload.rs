//! Fuzz target `plugin_upload`: the property is [`leadroute_tests::fuzz::plugin_upload`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leadroute_tests::fuzz::plugin_upload(data));
