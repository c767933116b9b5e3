//! The plugins in `plugins/`, compiled from source to WebAssembly by this crate's
//! build script, as bytes ready for `Engine::put_plugin`: the examples, and
//! `test-panic`, which exists for tests.
//!
//! Tests and benches depend on this crate so that every run exercises modules built
//! from the current source; no `.wasm` file is committed.
//!
//! # Layout
//! - `build.rs`: the nested `cargo build --target wasm32-unknown-unknown`.
//! - This file: the generated constants ([`RULES`], [`VIP_TIER`],
//!   [`INDUSTRY_AFFINITY`], [`LEAD_SCORE`], [`ALL`] of those four examples, and
//!   [`TEST_PANIC`]).

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

#[cfg(test)]
mod tests {
    #[test]
    fn every_plugin_is_a_wasm_module() {
        assert_eq!(super::ALL.len(), 4);
        let test_plugins = [("test-panic", super::TEST_PANIC)];
        for (name, bytes) in super::ALL.iter().chain(&test_plugins) {
            assert_eq!(&bytes[..4], b"\0asm", "{name}");
        }
    }
}
