//! The guest side of the ABI: what [`crate::register_plugin!`] expands to. The only
//! unsafe code a plugin contains lives here, written once.
//!
//! Memory is never given back to the host: it instantiates the module afresh for
//! every call and drops the whole instance afterwards. What matters is how much
//! memory a call *touches*: in a fresh instance every newly touched 4 KiB page is a
//! page fault (≈ 0.5–1 µs on a VM), and growing the memory is a system call. Hence
//! [`Arena`]: the module's global allocator is a bump allocator over a static buffer
//! that lies in the module's initial memory, so the input, the candidate `Vec`s and
//! the answer are laid out back to back in a few pages and `memory.grow` is never
//! called for typical inputs. Past the arena it falls back to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};

use crate::Plugin;
use crate::abi::{self, Output};
use crate::types::{Decision, RouteInput};

/// `leadroute_alloc`: `len` writable bytes aligned to 8, or 0 if `len` is negative or
/// memory is out. The allocation is never freed (see the module docs).
pub fn alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else {
        return 0;
    };
    let Ok(layout) = Layout::from_size_align(len.max(1), 8) else {
        return 0;
    };
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc(layout) };
    ptr as usize as i32
}

/// `leadroute_route`: reads the input at (`ptr`, `len`) in place, routes it with `P`,
/// and returns the packed location of the encoded output.
pub fn route<P: Plugin>(ptr: i32, len: i32) -> i64 {
    // Every call runs in a fresh instance, so the hook is set each time; setting it
    // allocates nothing (the hook is a plain function).
    #[cfg(target_arch = "wasm32")]
    std::panic::set_hook(Box::new(report_panic));
    let input: &[u8] = match usize::try_from(len) {
        Ok(0) | Err(_) => &[],
        // SAFETY: the host wrote `len` bytes at `ptr`, a buffer `alloc` handed out and
        // nothing else references; it stays alive because it is never freed.
        Ok(len) => unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len) },
    };
    let output = route_bytes::<P>(input);
    let (out_ptr, out_len) = (output.as_ptr() as usize as u32, output.len() as u32);
    // Leaked on purpose: the host reads it after we return, then drops the instance.
    std::mem::forget(output);
    abi::pack(out_ptr, out_len)
}

/// Routes input bytes with plugin `P` and encodes the answer: the whole guest side of
/// a call, minus memory handling. The native harness runs exactly this.
pub fn route_bytes<P: Plugin>(input: &[u8]) -> Vec<u8> {
    match decide::<P>(input) {
        Ok(Decision::Ranked { order, reason }) => Output::Ranked {
            order: &order,
            reason: &reason,
        }
        .encode(),
        Ok(Decision::NoPreference { reason }) => Output::NoPreference { reason: &reason }.encode(),
        Err(message) => Output::Error { message: &message }.encode(),
    }
}

fn decide<P: Plugin>(bytes: &[u8]) -> Result<Decision, String> {
    let input = RouteInput::decode(bytes)
        .map_err(|e| format!("input does not decode (ABI v{}): {e}", abi::ABI_VERSION))?;
    let config = config::<P::Config>(input.plugin_config_json())
        .map_err(|e| format!("plugin_config: {e}"))?;
    P::check_config(&config).map_err(|m| format!("plugin_config: {m}"))?;
    Ok(P::default().route(&input, &config))
}

/// Decodes `plugin_config` text into `C`; a plugin whose `Config` is `()` takes no
/// configuration, so its text is not even parsed.
fn config<C: serde::de::DeserializeOwned + 'static>(json: &str) -> Result<C, serde_json::Error> {
    if std::any::TypeId::of::<C>() == std::any::TypeId::of::<()>() {
        use serde::de::IntoDeserializer;
        return C::deserialize(().into_deserializer());
    }
    serde_json::from_str(json)
}

/// Bytes in the [`Arena`]: the input, sort buffers and answer of up to a few hundred
/// candidates (≈ 70 KiB at 500). It is part of the module's initial memory, which the
/// host resets after every call, so it is no bigger: with a 32 KiB stack and the
/// example plugins' ≈ 32 KiB of data, 96 KiB keeps their initial memory at three
/// 64 KiB pages instead of four (`benches/README.md`, "Plugins").
pub const ARENA_BYTES: usize = 96 << 10;

/// The plugin module's global allocator (installed by [`crate::register_plugin!`] on
/// wasm32): bumps through a static buffer and falls back to [`System`] when it is
/// full. Freeing the most recent allocation, or growing it, works in place; other
/// frees are forgotten, which is fine for one call's lifetime.
pub struct Arena {
    /// Bytes of `buf` handed out.
    used: Cell<usize>,
    buf: UnsafeCell<[u8; ARENA_BYTES]>,
}

// SAFETY: the arena is only installed on wasm32 without threads, where nothing runs
// concurrently; the native harness uses the system allocator.
unsafe impl Sync for Arena {}

impl Arena {
    /// An empty arena (usable in a `static`).
    pub const fn new() -> Arena {
        Arena {
            used: Cell::new(0),
            buf: UnsafeCell::new([0; ARENA_BYTES]),
        }
    }

    fn base(&self) -> usize {
        self.buf.get() as usize
    }

    fn contains(&self, ptr: *mut u8) -> bool {
        (self.base()..self.base() + ARENA_BYTES).contains(&(ptr as usize))
    }

    /// The arena offset `layout` would start at, if it fits.
    fn fit(&self, layout: Layout) -> Option<usize> {
        let start = (self.base() + self.used.get()).checked_next_multiple_of(layout.align())?;
        let end = start.checked_add(layout.size())?;
        (end <= self.base() + ARENA_BYTES).then_some(start - self.base())
    }
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

// SAFETY: allocations within the arena never overlap (`used` only moves past what was
// handed out, or back over the most recent allocation when it is freed); everything
// else is the system allocator's.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.fit(layout) {
            Some(at) => {
                self.used.set(at + layout.size());
                // SAFETY: `at + size` is within the buffer.
                unsafe { (self.buf.get() as *mut u8).add(at) }
            }
            // SAFETY: forwarded as received.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.contains(ptr) {
            // SAFETY: not ours, so the system allocator's.
            return unsafe { System.dealloc(ptr, layout) };
        }
        if ptr as usize + layout.size() == self.base() + self.used.get() {
            self.used.set(ptr as usize - self.base());
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.contains(ptr) {
            // SAFETY: not ours, so the system allocator's.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let offset = ptr as usize - self.base();
        let last = offset + layout.size() == self.used.get();
        if last && offset + new_size <= ARENA_BYTES {
            // The most recent allocation grows or shrinks where it is: the common
            // case of a `Vec` being filled.
            self.used.set(offset + new_size);
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees a valid layout for `new_size`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a fresh allocation, then a copy of the old bytes into it.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod host {
    #[link(wasm_import_module = "leadroute")]
    unsafe extern "C" {
        /// `leadroute.log(level, ptr, len)`: imported by every plugin, whose panic hook logs.
        #[link_name = "log"]
        pub fn log(level: i32, ptr: *const u8, len: usize);
    }
}

/// Sends one line to the host (stderr off wasm).
pub fn log(message: &str) {
    log_at(abi::level::INFO, message);
}

fn log_at(level: i32, message: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the host only reads `len` bytes at `ptr` during the call.
    unsafe {
        host::log(level, message.as_ptr(), message.len())
    };
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!(
        "[plugin] {}{message}",
        if level >= abi::level::WARN {
            "warning: "
        } else {
            ""
        }
    );
}

/// The panic hook of a plugin module. A panic aborts the module with wasm's bare
/// `unreachable` trap, which says nothing of where or why; this logs both first, as a
/// warning, and the engine adds a call's last warning to the description of its trap.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn report_panic(info: &std::panic::PanicHookInfo<'_>) {
    log_at(
        abi::level::WARN,
        &panic_line(info.location(), info.payload_as_str()),
    );
}

/// `panicked at src/lib.rs:12:9: the message`.
fn panic_line(at: Option<&std::panic::Location<'_>>, message: Option<&str>) -> String {
    let message = message.unwrap_or("(a panic without a message)");
    match at {
        Some(at) => format!("panicked at {at}: {message}"),
        None => format!("panicked: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_described_on_one_line() {
        let at = std::panic::Location::caller();
        let line = panic_line(Some(at), Some("boom"));
        assert_eq!(
            line,
            format!(
                "panicked at {}:{}:{}: boom",
                at.file(),
                at.line(),
                at.column()
            )
        );
        assert_eq!(
            panic_line(None, None),
            "panicked: (a panic without a message)"
        );
    }

    #[test]
    fn the_arena_bumps_reuses_its_top_and_overflows_to_the_system() {
        let arena = Box::new(Arena::new());
        let l = |size, align| Layout::from_size_align(size, align).unwrap();
        // SAFETY: every pointer is used within its layout and freed with it.
        unsafe {
            let a = arena.alloc(l(3, 1));
            let b = arena.alloc(l(8, 8));
            assert!(arena.contains(a) && arena.contains(b));
            assert_eq!(b as usize % 8, 0, "aligned");
            assert!(b as usize >= a as usize + 3, "no overlap");
            // Growing the top allocation stays in place; freeing it rewinds.
            b.write_bytes(7, 8);
            let b2 = arena.realloc(b, l(8, 8), 64);
            assert_eq!(b2, b);
            assert_eq!(*b2.add(7), 7);
            let used = arena.used.get();
            arena.dealloc(b2, l(64, 8));
            assert!(arena.used.get() < used);
            // Growing a buried allocation moves it and keeps its bytes.
            let c = arena.alloc(l(16, 8));
            a.write_bytes(9, 3);
            let a2 = arena.realloc(a, l(3, 1), 100);
            assert_ne!(a2, a);
            assert_eq!(std::slice::from_raw_parts(a2, 3), [9, 9, 9]);
            // Too big for what is left: the system allocator serves it.
            let big = arena.alloc(l(ARENA_BYTES, 8));
            assert!(!big.is_null() && !arena.contains(big));
            big.write_bytes(1, ARENA_BYTES);
            arena.dealloc(big, l(ARENA_BYTES, 8));
            arena.dealloc(c, l(16, 8));
        }
    }
}
