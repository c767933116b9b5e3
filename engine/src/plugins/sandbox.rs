//! The wasmtime sandbox: compiling untrusted modules under limits, and running one
//! call in a fresh instance with a fuel budget, a wall-clock backstop and a memory cap.
//!
//! Why a fresh instance per call: a plugin must be a pure function, and a reused
//! instance would let one lead's call leave state (or a corrupted heap after a trap)
//! for the next. With the pooling allocator and copy-on-write memory images a fresh
//! instance costs a few microseconds (see `benches/README.md`, "Plugins"), so purity
//! is bought cheaply and a trap never needs clean-up.
//!
//! Budgets: fuel is the main, deterministic one (the same input always costs the same
//! fuel, reported to authors as "cost"); the epoch deadline is a backstop for anything
//! fuel does not meter. A background thread advances the epoch every [`EPOCH_TICK`]
//! while calls run (`super::epoch`).

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use leadroute_plugin_sdk::abi::{self, InputRef};
use wasmtime::{
    Caller, Config, Engine as WasmEngine, Extern, ExternType, FuncType, InstanceAllocationStrategy,
    InstancePre, Linker, Module, ModuleExport, OptLevel, PoolingAllocationConfig, ResourceLimiter,
    Store, Trap,
};

use super::abi::{Failure, FailureReason};
use super::epoch::{self, Ticker};
use crate::config::{Checkpoint, Probe};

/// How often the epoch advances; the granularity of the wall-clock deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Longest log line kept from `leadroute.log`, in bytes.
const MAX_LOG_BYTES: usize = 512;
/// Most `leadroute.log` lines kept per call; the rest are dropped.
const MAX_LOG_LINES: u32 = 8;
/// Most table elements a module may grow to.
const MAX_TABLE_ELEMENTS: usize = 10_000;
/// Bytes of each pooled table kept resident between calls (zeroed in place rather
/// than returned to the kernel). Without it every call paid an `madvise` on release
/// and a page fault when the guest first made an indirect call (Rust's sort does):
/// ≈ 4.5 µs of a 14 µs call at 50 candidates (`benches/README.md`, "Plugins"). Only
/// the table's used size is zeroed, so a 57-entry table costs one 4 KiB `memset`;
/// 64 KiB covers 8192 entries.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Limits on plugin modules and calls. Defaults suit routing decisions of up to a
/// few hundred candidates.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginLimits {
    /// Fuel per call (≈ one unit per wasm instruction). Default 100M: measured
    /// ≈ 11 ms of a tight loop on the reference machine (10M took 1.1 ms), the "≈ 10 ms
    /// of work" budget a decision may hold the actor thread for.
    pub fuel: u64,
    /// Wall-clock backstop per call, enforced with epochs. Default 100 ms.
    pub deadline: Duration,
    /// Most linear memory a call may use. Default 16 MiB.
    pub memory_bytes: usize,
    /// Largest module accepted at upload. Default 8 MiB, the upload body limit of the
    /// HTTP API, so a module the server lets through is never cut by a smaller cap.
    pub max_module_bytes: usize,
    /// Longest a module may take to compile at upload. Default 10 s (an unoptimised
    /// debug build of the compiler needs seconds for a 200 KiB module).
    pub compile_timeout: Duration,
    /// Most modules compiling at once (at least 1). Default 2. A compile cannot be
    /// interrupted, so one past `compile_timeout` keeps its thread until it ends; an
    /// upload finding every slot held is refused (`compile_busy`) rather than start
    /// yet another thread. Two let uploads go on while one such compile lingers.
    pub max_compiles: usize,
    /// Largest encoded input handed to a plugin. Default 1 MiB.
    pub max_input_bytes: usize,
    /// Largest answer accepted. Default 64 KiB.
    pub max_output_bytes: usize,
    /// Instances alive at once (the pool's size); a call beyond it fails with
    /// `unavailable` rather than waiting. Default 16.
    pub max_instances: u32,
    /// Bytes of each pooled memory kept resident between calls: that prefix of the
    /// instance's memory is reset in place (`memset`, and a copy of the data image)
    /// instead of being returned to the kernel, so the next instance does not
    /// page-fault on it. Default 2 MiB: more than a small module's whole initial
    /// memory, whose size is then what a reset costs (`benches/README.md`, "Plugins");
    /// it bounds what 16 pooled instances keep resident to 32 MiB. (Finding only the
    /// dirtied pages with Linux's `PAGEMAP_SCAN` measured slower here: the scan costs
    /// more than the `memset` of 192 KiB it saves.)
    pub keep_resident_bytes: usize,
    /// Consecutive failures that open a plugin's circuit. Default 5.
    pub circuit_threshold: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            fuel: 100_000_000,
            deadline: Duration::from_millis(100),
            memory_bytes: 16 << 20,
            max_module_bytes: 8 << 20,
            compile_timeout: Duration::from_secs(10),
            max_compiles: 2,
            max_input_bytes: 1 << 20,
            max_output_bytes: 64 << 10,
            max_instances: 16,
            keep_resident_bytes: 2 << 20,
            circuit_threshold: 5,
        }
    }
}

/// A module that passed the static checks, ready to instantiate. Cloning shares the
/// compiled code.
#[derive(Clone)]
pub(crate) struct Compiled {
    pre: InstancePre<CallState>,
    memory: ModuleExport,
    abi_version: ModuleExport,
    alloc: ModuleExport,
    route: ModuleExport,
}

/// A successful call: the module's raw answer and the fuel it burnt.
pub(crate) struct Called {
    pub output: Vec<u8>,
    pub fuel: u64,
}

/// Per-call store data: the memory cap and what the call did against it.
pub(crate) struct CallState {
    plugin: Arc<str>,
    memory_cap: usize,
    memory_denied: bool,
    log_lines: u32,
    /// The last warning the call logged, counted or not: the SDK's panic hook logs the
    /// panic's message and place as one, just before the module traps.
    last_warning: Option<String>,
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Refusing makes `memory.grow` return -1, as on a real out-of-memory; the flag
        // lets the failure be labelled `out_of_memory` however the guest reacts.
        if desired > self.memory_cap {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Why a module was not compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CompileError {
    /// The module is unacceptable; the message says why, for the operator.
    Invalid(String),
    /// Every compile slot is held; the module was not looked at past its header.
    Busy {
        /// Compiles running.
        running: usize,
        /// The most that may run at once.
        limit: usize,
    },
}

impl From<String> for CompileError {
    fn from(message: String) -> Self {
        CompileError::Invalid(message)
    }
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompileError::Invalid(message) => f.write_str(message),
            CompileError::Busy { running, limit } => {
                write!(f, "{running} compiles running (limit {limit})")
            }
        }
    }
}

/// What to do when every compile slot is held, and whether the compile timeout holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Refuse with [`CompileError::Busy`] (uploads: the caller can retry).
    Refuse,
    /// Wait for a slot (tools, which compile one module after another).
    Wait,
    /// Wait for a slot, and for the compile however long it takes: a stored version,
    /// at start-up. It compiled in time when it was uploaded; on a machine busy
    /// starting up it may not, and skipping it would leave its territories falling
    /// back until an operator uploads it again.
    Stored,
}

/// Counts the compile threads alive; a slot is held from before a thread starts
/// until it ends.
struct CompileSlots {
    limit: usize,
    running: Mutex<usize>,
    freed: Condvar,
}

/// One compile thread's place; given back when dropped, on that thread, once the
/// compile has ended (however long after its caller stopped waiting).
struct CompileSlot(Arc<CompileSlots>);

impl CompileSlots {
    fn take(slots: &Arc<CompileSlots>, admit: Admit) -> Result<CompileSlot, CompileError> {
        let mut running = slots.running.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= slots.limit {
            match admit {
                Admit::Refuse => {
                    return Err(CompileError::Busy {
                        running: *running,
                        limit: slots.limit,
                    });
                }
                Admit::Wait | Admit::Stored => {
                    running = slots.freed.wait(running).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
        *running += 1;
        Ok(CompileSlot(slots.clone()))
    }
}

impl Drop for CompileSlot {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        self.0.freed.notify_one();
    }
}

/// The wasmtime engine, its linker (the `leadroute.log` import only) and the epoch
/// ticker. Shared by every plugin.
pub(crate) struct Sandbox {
    engine: WasmEngine,
    linker: Linker<CallState>,
    limits: PluginLimits,
    epoch_ticks: u64,
    ticker: Ticker,
    compiles: Arc<CompileSlots>,
    probe: Probe,
}

impl Sandbox {
    /// Builds the engine with the pooling allocator and starts the epoch ticker;
    /// `probe` hears of compile threads starting and ending.
    pub(crate) fn new(limits: PluginLimits, probe: Probe) -> Result<Sandbox, String> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_memories(limits.max_instances)
            .total_tables(limits.max_instances)
            .total_core_instances(limits.max_instances)
            .max_memory_size(limits.memory_bytes)
            .table_elements(MAX_TABLE_ELEMENTS)
            .linear_memory_keep_resident(limits.keep_resident_bytes)
            .table_keep_resident(TABLE_KEEP_RESIDENT);
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .cranelift_opt_level(OptLevel::Speed)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = WasmEngine::new(&config).map_err(|e| format!("wasmtime engine: {e:#}"))?;
        let mut linker = Linker::new(&engine);
        linker
            .func_wrap(abi::IMPORT_MODULE, abi::IMPORT_LOG, log_import)
            .map_err(|e| format!("wasmtime linker: {e:#}"))?;

        let ticker = Ticker::start(engine.clone(), EPOCH_TICK, epoch::LINGER)
            .map_err(|e| format!("cannot start the epoch ticker: {e}"))?;
        // One tick more than the deadline: the first tick may come at once.
        let epoch_ticks = limits.deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1;
        let compiles = Arc::new(CompileSlots {
            limit: limits.max_compiles.max(1),
            running: Mutex::new(0),
            freed: Condvar::new(),
        });
        Ok(Sandbox {
            engine,
            linker,
            limits,
            epoch_ticks,
            ticker,
            compiles,
            probe,
        })
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// Checks and compiles an uploaded module. The error says what is wrong, for the
    /// operator who uploaded it, or that no compile slot was free (`admit`).
    pub(crate) fn compile(&self, wasm: &[u8], admit: Admit) -> Result<Compiled, CompileError> {
        if wasm.len() > self.limits.max_module_bytes {
            return Err(CompileError::Invalid(format!(
                "module is {} bytes; the limit is {}",
                wasm.len(),
                self.limits.max_module_bytes
            )));
        }
        if !wasm.starts_with(b"\0asm") {
            return Err(CompileError::Invalid(
                "not a WebAssembly module: it lacks the \\0asm header".into(),
            ));
        }
        let module = self.compile_in_time(wasm, admit)?;
        for import in module.imports() {
            let allowed = import.module() == abi::IMPORT_MODULE
                && import.name() == abi::IMPORT_LOG
                && matches!(import.ty(), ExternType::Func(f) if signature_is(&f, &["i32", "i32", "i32"], &[]));
            if !allowed {
                return Err(CompileError::Invalid(format!(
                    "imports {}.{}; the only host function is leadroute.log \
                     (func (param i32 i32 i32)) — no WASI, no other imports",
                    import.module(),
                    import.name()
                )));
            }
        }
        let memory = export(
            &module,
            abi::EXPORT_MEMORY,
            "memory",
            |t| matches!(t, ExternType::Memory(m) if !m.is_64() && !m.is_shared()),
        )?;
        let func = |name: &'static str,
                    params: &'static [&'static str],
                    results: &'static [&'static str]| {
            let wat = format!(
                "func (param {}) (result {})",
                params.join(" "),
                results.join(" ")
            );
            export(
                &module,
                name,
                &wat,
                move |t| matches!(t, ExternType::Func(f) if signature_is(f, params, results)),
            )
        };
        let abi_version = func(abi::EXPORT_ABI_VERSION, &[], &["i32"])?;
        let alloc = func(abi::EXPORT_ALLOC, &["i32"], &["i32"])?;
        let route = func(abi::EXPORT_ROUTE, &["i32", "i32"], &["i64"])?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| format!("cannot be linked: {e:#}"))?;
        Ok(Compiled {
            pre,
            memory,
            abi_version,
            alloc,
            route,
        })
    }

    /// Compiles on a thread of its own and gives up after the compile timeout: a module
    /// can be crafted to compile slowly. The thread cannot be cancelled and finishes in
    /// the background, holding its compile slot until then, so however many slow
    /// uploads arrive, at most `max_compiles` such threads exist.
    fn compile_in_time(&self, wasm: &[u8], admit: Admit) -> Result<Module, CompileError> {
        let slot = CompileSlots::take(&self.compiles, admit)?;
        let (tx, rx) = mpsc::channel();
        let engine = self.engine.clone();
        let bytes = wasm.to_vec();
        let probe = self.probe.clone();
        std::thread::Builder::new()
            .name("leadroute-plugin-compile".into())
            .spawn(move || {
                probe(Checkpoint::CompileStarted);
                let compiled = Module::new(&engine, &bytes);
                // Only now is the thread done with the compiler: the slot goes back here,
                // not when the caller stops waiting. And before the caller hears the
                // result, so an upload answered in time has freed its slot: the next one
                // cannot find it still held.
                drop(slot);
                probe(Checkpoint::CompileEnded);
                let _ = tx.send(compiled);
            })
            .map_err(|e| format!("cannot start the compiler thread: {e}"))?;
        let received = match (admit, rx.recv_timeout(self.limits.compile_timeout)) {
            (Admit::Stored, Err(mpsc::RecvTimeoutError::Timeout)) => {
                tracing::warn!(limit = ?self.limits.compile_timeout,
                    "a stored plugin version compiles slower than an upload may; start-up waits for it");
                rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
            }
            (_, received) => received,
        };
        let message = match received {
            Ok(Ok(module)) => return Ok(module),
            Ok(Err(e)) => format!("does not compile: {e:#}"),
            Err(mpsc::RecvTimeoutError::Timeout) => format!(
                "compilation took longer than {:?}",
                self.limits.compile_timeout
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => "the compiler thread failed".into(),
        };
        Err(CompileError::Invalid(message))
    }

    /// Calls `leadroute_abi_version` in a fresh instance.
    pub(crate) fn abi_version(
        &self,
        compiled: &Compiled,
        plugin: &Arc<str>,
    ) -> Result<i32, Failure> {
        let _ticking = self.ticker.ticking();
        let mut store = self.store(plugin);
        let result = (|| {
            let instance = compiled
                .pre
                .instantiate(&mut store)
                .map_err(Fault::Instantiate)?;
            let f = instance
                .get_module_export(&mut store, &compiled.abi_version)
                .and_then(Extern::into_func)
                .ok_or(Fault::Missing(abi::EXPORT_ABI_VERSION))?
                .typed::<(), i32>(&store)
                .map_err(Fault::Call)?;
            f.call(&mut store, ()).map_err(Fault::Call)
        })();
        result.map_err(|f| self.classify(f, store.data()))
    }

    /// Routes `input` in a fresh instance; returns the raw answer.
    pub(crate) fn call(
        &self,
        compiled: &Compiled,
        plugin: &Arc<str>,
        input: &InputRef<'_>,
    ) -> Result<Called, Failure> {
        self.check_input(input)?;
        let _ticking = self.ticker.ticking();
        let mut store = self.store(plugin);
        let result = self.call_in(&mut store, compiled, input);
        let fuel = self.limits.fuel - store.get_fuel().unwrap_or(0);
        match result {
            Ok(output) => Ok(Called { output, fuel }),
            Err(fault) => Err(self.classify(fault, store.data())),
        }
    }

    fn check_input(&self, input: &InputRef<'_>) -> Result<(), Failure> {
        let len = input.encoded_len();
        if len > self.limits.max_input_bytes {
            return Err(Failure::new(
                FailureReason::InputTooLarge,
                format!(
                    "input is {len} bytes; the limit is {}",
                    self.limits.max_input_bytes
                ),
            ));
        }
        Ok(())
    }

    fn store(&self, plugin: &Arc<str>) -> Store<CallState> {
        let mut store = Store::new(
            &self.engine,
            CallState {
                plugin: plugin.clone(),
                memory_cap: self.limits.memory_bytes,
                memory_denied: false,
                log_lines: 0,
                last_warning: None,
            },
        );
        store.limiter(|s| s);
        store
            .set_fuel(self.limits.fuel)
            .expect("fuel is enabled in the engine config");
        store.set_epoch_deadline(self.epoch_ticks);
        store
    }

    fn call_in(
        &self,
        store: &mut Store<CallState>,
        c: &Compiled,
        input: &InputRef<'_>,
    ) -> Result<Vec<u8>, Fault> {
        let bound = Self::bind(store, c)?;
        self.run(store, &bound, input)
    }

    /// Instantiates `c` in `store` and looks up the exports a call needs.
    fn bind(store: &mut Store<CallState>, c: &Compiled) -> Result<Bound, Fault> {
        let instance = c.pre.instantiate(&mut *store).map_err(Fault::Instantiate)?;
        let memory = instance
            .get_module_export(&mut *store, &c.memory)
            .and_then(Extern::into_memory)
            .ok_or(Fault::Missing(abi::EXPORT_MEMORY))?;
        let alloc = instance
            .get_module_export(&mut *store, &c.alloc)
            .and_then(Extern::into_func)
            .ok_or(Fault::Missing(abi::EXPORT_ALLOC))?
            .typed::<i32, i32>(&*store)
            .map_err(Fault::Call)?;
        let route = instance
            .get_module_export(&mut *store, &c.route)
            .and_then(Extern::into_func)
            .ok_or(Fault::Missing(abi::EXPORT_ROUTE))?
            .typed::<(i32, i32), i64>(&*store)
            .map_err(Fault::Call)?;
        Ok(Bound {
            memory,
            alloc,
            route,
        })
    }

    /// One routing call on a bound instance: encode the input straight into the
    /// guest's buffer (no intermediate copy), route, read the answer.
    fn run(
        &self,
        store: &mut Store<CallState>,
        b: &Bound,
        input: &InputRef<'_>,
    ) -> Result<Vec<u8>, Fault> {
        let len = input.encoded_len();
        // The input cap (checked by the callers) keeps this far below i32::MAX.
        let ptr = b.alloc.call(&mut *store, len as i32).map_err(Fault::Call)?;
        if ptr == 0 {
            return Err(Fault::AllocFailed);
        }
        let start = ptr as u32 as usize;
        let buffer = b
            .memory
            .data_mut(&mut *store)
            .get_mut(start..start + len)
            .ok_or(Fault::Bounds(
                "leadroute_alloc returned a buffer outside memory",
            ))?;
        input
            .encode_into(buffer)
            .map_err(|_| Fault::Bounds("the input does not fit its own encoded length"))?;
        let packed = b
            .route
            .call(&mut *store, (ptr, len as i32))
            .map_err(Fault::Call)?;
        let (out_ptr, out_len) = abi::unpack(packed);
        if out_len as usize > self.limits.max_output_bytes {
            return Err(Fault::OutputTooLarge(out_len));
        }
        let start = out_ptr as usize;
        b.memory
            .data(&*store)
            .get(start..start + out_len as usize)
            .map(<[u8]>::to_vec)
            .ok_or(Fault::Bounds("the answer lies outside memory"))
    }

    /// An instance kept alive across calls. Only for measuring the alternative to a
    /// fresh instance per call (see the module docs): the engine never reuses one.
    pub(crate) fn live(&self, c: &Compiled, plugin: &Arc<str>) -> Result<Live, Failure> {
        let _ticking = self.ticker.ticking();
        let mut store = self.store(plugin);
        match Self::bind(&mut store, c) {
            Ok(bound) => Ok(Live { store, bound }),
            Err(fault) => Err(self.classify(fault, store.data())),
        }
    }

    /// Routes `input` on a live instance, with a fresh fuel budget and deadline.
    pub(crate) fn call_live(
        &self,
        live: &mut Live,
        input: &InputRef<'_>,
    ) -> Result<Vec<u8>, Failure> {
        self.check_input(input)?;
        let _ticking = self.ticker.ticking();
        live.store
            .set_fuel(self.limits.fuel)
            .expect("fuel is enabled in the engine config");
        live.store.set_epoch_deadline(self.epoch_ticks);
        let state = live.store.data_mut();
        state.log_lines = 0;
        state.last_warning = None;
        let result = self.run(&mut live.store, &live.bound, input);
        result.map_err(|fault| self.classify(fault, live.store.data()))
    }

    fn classify(&self, fault: Fault, state: &CallState) -> Failure {
        use FailureReason as R;
        let limits = &self.limits;
        match fault {
            Fault::Instantiate(e) if e.downcast_ref::<Trap>().is_none() && !state.memory_denied => {
                Failure::new(R::Unavailable, format!("cannot instantiate: {e:#}"))
            }
            Fault::Instantiate(e) | Fault::Call(e) => match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => Failure::new(
                    R::OutOfFuel,
                    format!("used its whole fuel budget ({})", limits.fuel),
                ),
                Some(Trap::Interrupt) => Failure::new(
                    R::Timeout,
                    format!("ran past the {:?} deadline", limits.deadline),
                ),
                Some(Trap::StackOverflow) => {
                    Failure::new(R::StackOverflow, "exhausted the wasm stack")
                }
                _ if state.memory_denied => Failure::new(
                    R::OutOfMemory,
                    format!("tried to grow memory past {} bytes", limits.memory_bytes),
                ),
                Some(trap) => Failure::new(R::Trap, with_warning(trap.to_string(), state)),
                None => Failure::new(R::Trap, with_warning(format!("{e:#}"), state)),
            },
            Fault::AllocFailed => Failure::new(
                R::OutOfMemory,
                "leadroute_alloc returned 0 for the input buffer",
            ),
            Fault::Missing(name) => {
                Failure::new(R::InvalidOutput, format!("export {name} is gone"))
            }
            Fault::Bounds(what) => Failure::new(R::InvalidOutput, what),
            Fault::OutputTooLarge(len) => Failure::new(
                R::OutputTooLarge,
                format!(
                    "answer is {len} bytes; the limit is {}",
                    limits.max_output_bytes
                ),
            ),
        }
    }
}

/// An instance's exports a call needs.
struct Bound {
    memory: wasmtime::Memory,
    alloc: wasmtime::TypedFunc<i32, i32>,
    route: wasmtime::TypedFunc<(i32, i32), i64>,
}

/// A store with an instance kept across calls; see [`Sandbox::live`].
pub(crate) struct Live {
    store: Store<CallState>,
    bound: Bound,
}

/// What went wrong inside a call, before it is labelled.
enum Fault {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
    Missing(&'static str),
    AllocFailed,
    Bounds(&'static str),
    OutputTooLarge(u32),
}

/// A trap's description, with the last warning the call logged: for a plugin built
/// with the SDK, the panic that caused the trap, which wasm's own message does not say.
fn with_warning(trap: String, state: &CallState) -> String {
    match &state.last_warning {
        Some(warning) => format!("{trap}; the plugin's last warning: {warning}"),
        None => trap,
    }
}

/// `leadroute.log(level, ptr, len)`: one line to the engine's log, capped in length and
/// in lines per call so a chatty plugin cannot flood it. A warning past the cap is not
/// logged but still kept as the call's last warning.
fn log_import(mut caller: Caller<'_, CallState>, level: i32, ptr: i32, len: i32) {
    let warning = level >= abi::level::WARN;
    let counted = caller.data().log_lines < MAX_LOG_LINES;
    if !counted && !warning {
        return;
    }
    let Some(memory) = caller
        .get_export(abi::EXPORT_MEMORY)
        .and_then(Extern::into_memory)
    else {
        return;
    };
    let start = ptr as u32 as usize;
    let len = (len.max(0) as usize).min(MAX_LOG_BYTES);
    let data = memory.data(&caller);
    let Some(bytes) = data.get(start..start.saturating_add(len)) else {
        return;
    };
    let line = String::from_utf8_lossy(bytes).into_owned();
    if warning {
        caller.data_mut().last_warning = Some(line.clone());
    }
    if !counted {
        return;
    }
    caller.data_mut().log_lines += 1;
    let plugin = &caller.data().plugin;
    match level {
        l if l >= abi::level::WARN => tracing::warn!(%plugin, "{line}"),
        abi::level::INFO => tracing::info!(%plugin, "{line}"),
        _ => tracing::debug!(%plugin, "{line}"),
    }
}

fn signature_is(f: &FuncType, params: &[&str], results: &[&str]) -> bool {
    f.params()
        .map(|p| p.to_string())
        .eq(params.iter().map(|s| s.to_string()))
        && f.results()
            .map(|r| r.to_string())
            .eq(results.iter().map(|s| s.to_string()))
}

fn export(
    module: &Module,
    name: &'static str,
    expected: &str,
    ok: impl Fn(&ExternType) -> bool,
) -> Result<ModuleExport, String> {
    let Some(ty) = module.get_export(name) else {
        return Err(format!("missing export `{name}` ({expected})"));
    };
    if !ok(&ty) {
        return Err(format!("export `{name}` is {ty:?}; expected ({expected})"));
    }
    module
        .get_export_index(name)
        .ok_or_else(|| format!("missing export `{name}` ({expected})"))
}
