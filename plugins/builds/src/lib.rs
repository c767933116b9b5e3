//! The example plugins in `plugins/`, compiled from source to WebAssembly by this
//! crate's build script, as bytes ready for `Engine::put_plugin`.
//!
//! Tests and benches depend on this crate so that every run exercises modules built
//! from the current source; no `.wasm` file is committed.
//!
//! # Layout
//! - `build.rs`: the nested `cargo build --target wasm32-unknown-unknown`.
//! - This file: the generated constants ([`RULES`], [`VIP_TIER`],
//!   [`INDUSTRY_AFFINITY`], [`LEAD_SCORE`], [`ALL`]).

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

#[cfg(test)]
mod tests {
    #[test]
    fn every_plugin_is_a_wasm_module() {
        assert_eq!(super::ALL.len(), 4);
        for (name, bytes) in super::ALL {
            assert_eq!(&bytes[..4], b"\0asm", "{name}");
        }
    }
}
