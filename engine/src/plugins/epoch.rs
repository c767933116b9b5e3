//! The epoch ticker: the clock behind every plugin call's wall-clock deadline.
//!
//! wasmtime interrupts a call once the engine's epoch passes the call's deadline, and
//! the epoch only moves when something increments it: this thread, every
//! [`EPOCH_TICK`](super::EPOCH_TICK). A server with no plugin in use would have it
//! wake 500 times a second for nothing (about 1% of a core, measured on two cores
//! under load, each wake-up also preempting a thread that routes). So it ticks only
//! while a call runs, or ran within [`LINGER`]: a call takes a [`Ticking`] guard,
//! whose first holder wakes the thread. Under steady plugin traffic it never sleeps,
//! and a call never waits for it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::Engine as WasmEngine;

/// How long the ticker goes on after the last call before it sleeps: long enough
/// that calls a few milliseconds apart never wake it.
pub(super) const LINGER: Duration = Duration::from_secs(1);

/// The thread that advances a wasmtime engine's epoch, and its state.
pub(super) struct Ticker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the ticker and the calls share.
struct Shared {
    /// Calls in flight.
    calls: AtomicUsize,
    /// Set by every call, taken by the thread: a call that began and ended between
    /// two of its looks still counts as one.
    called: AtomicBool,
    /// Whether the thread sleeps for want of calls; the mutex of `wake`.
    asleep: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
    /// Epochs advanced so far, for the tests.
    ticks: AtomicU64,
}

/// Held for the length of a call: while any is held, the epoch advances.
pub(super) struct Ticking<'a>(&'a Shared);

impl Ticker {
    /// Starts a thread that increments `engine`'s epoch every `tick` while calls run
    /// and for `linger` after the last one.
    pub(super) fn start(
        engine: WasmEngine,
        tick: Duration,
        linger: Duration,
    ) -> std::io::Result<Ticker> {
        let shared = Arc::new(Shared::new());
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("leadroute-plugin-epoch".into())
            .spawn(move || run(&state, &engine, tick, linger))?;
        Ok(Ticker {
            shared,
            thread: Some(thread),
        })
    }

    /// Keeps the epoch moving until the guard is dropped.
    pub(super) fn ticking(&self) -> Ticking<'_> {
        self.shared.ticking()
    }
}

impl Shared {
    fn new() -> Shared {
        Shared {
            calls: AtomicUsize::new(0),
            called: AtomicBool::new(false),
            asleep: Mutex::new(false),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
        }
    }

    /// A call's guard; wakes the thread if it sleeps.
    fn ticking(&self) -> Ticking<'_> {
        self.called.store(true, Ordering::Relaxed);
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            // Under the mutex, so a thread about to sleep either sees the call or is
            // already waiting when it is told.
            let asleep = self.asleep.lock().unwrap_or_else(|e| e.into_inner());
            if *asleep {
                self.wake.notify_one();
            }
        }
        Ticking(self)
    }

    /// Whether a call runs, or ran since the last look.
    fn saw_call(&self) -> bool {
        let called = self.called.swap(false, Ordering::Relaxed);
        called || self.calls.load(Ordering::SeqCst) > 0
    }
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _asleep = self.shared.asleep.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The ticker's loop: tick while calls run or ran within `linger`, else sleep until
/// a call comes or the ticker is dropped. A call made while it sleeps wakes it only
/// to find the call over, when it was shorter than the wake-up: such a call needed
/// no deadline.
fn run(shared: &Shared, engine: &WasmEngine, tick: Duration, linger: Duration) {
    let mut last_call = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.saw_call() {
            last_call = Instant::now();
        } else if last_call.elapsed() >= linger {
            let mut asleep = shared.asleep.lock().unwrap_or_else(|e| e.into_inner());
            *asleep = true;
            while shared.calls.load(Ordering::SeqCst) == 0 && !shared.stop.load(Ordering::SeqCst) {
                asleep = shared.wake.wait(asleep).unwrap_or_else(|e| e.into_inner());
            }
            *asleep = false;
            last_call = Instant::now();
            continue;
        }
        std::thread::sleep(tick);
        engine.increment_epoch();
        shared.ticks.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits, up to a bound, for `done`; false if it never came.
    fn eventually(mut done: impl FnMut() -> bool) -> bool {
        let bound = Instant::now() + Duration::from_secs(30);
        while Instant::now() < bound {
            if done() {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    fn engine() -> WasmEngine {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        WasmEngine::new(&config).unwrap()
    }

    fn asleep(t: &Ticker) -> bool {
        *t.shared.asleep.lock().unwrap()
    }

    #[test]
    fn it_ticks_only_while_a_call_holds_it() {
        let ticker = Ticker::start(engine(), Duration::from_millis(1), Duration::ZERO).unwrap();
        assert!(eventually(|| asleep(&ticker)), "no call: it sleeps");
        let slept_at = ticker.shared.ticks.load(Ordering::SeqCst);

        let call = ticker.ticking();
        let ticks = || ticker.shared.ticks.load(Ordering::SeqCst);
        assert!(
            eventually(|| ticks() >= slept_at + 3),
            "a call wakes it and it ticks"
        );
        assert!(!asleep(&ticker), "awake while the call runs");

        // Asleep means waiting on the condition variable, which only a call or the
        // ticker's drop ends.
        drop(call);
        assert!(
            eventually(|| asleep(&ticker)),
            "asleep again after the call"
        );
    }

    #[test]
    fn a_call_is_seen_even_if_it_ended_between_two_looks() {
        let shared = Shared::new();
        assert!(!shared.saw_call());
        // Begun and ended unseen, as a plugin call of microseconds is between two
        // ticks: seen once, so the thread does not fall asleep under such calls.
        drop(shared.ticking());
        assert!(shared.saw_call());
        assert!(!shared.saw_call(), "only once");
        // Running: seen at every look.
        let call = shared.ticking();
        assert!(shared.saw_call());
        assert!(shared.saw_call());
        drop(call);
        assert!(!shared.saw_call());
    }

    /// Drops `ticker` on a thread of its own: true if the drop (which joins the
    /// ticker's thread) returned within a bound far above any scheduling delay. A drop
    /// that cannot stop the thread fails the test instead of hanging it.
    fn drop_returns(ticker: Ticker) -> bool {
        let (done, dropped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(ticker);
            let _ = done.send(());
        });
        dropped.recv_timeout(Duration::from_secs(30)).is_ok()
    }

    #[test]
    fn dropping_it_stops_the_thread_asleep_or_awake() {
        let sleeping = Ticker::start(engine(), Duration::from_millis(1), Duration::ZERO).unwrap();
        assert!(eventually(|| asleep(&sleeping)));
        assert!(drop_returns(sleeping), "asleep, it did not stop");

        let awake = Ticker::start(engine(), Duration::from_millis(1), LINGER).unwrap();
        let call = awake.ticking();
        drop(call);
        assert!(drop_returns(awake), "awake, it did not stop");
    }
}
