//! What the server's threads were doing while the open loop was slow.
//!
//! A slow window alone cannot tell a server that computes (one thread on a core for
//! the whole window) from one that waits (on a lock, the disk, a wake-up) or one that
//! is not scheduled at all (the host took the CPU: *steal*). So while the open loop
//! runs, a thread of the generator samples, every [`PERIOD`]:
//! - each server thread's `/proc/PID/task/TID/schedstat`: nanoseconds on a CPU, and
//!   nanoseconds runnable but waiting for one (the kernel's own accounting, exact,
//!   unlike the 10 ms ticks of `stat`);
//! - the machine's idle and steal time from `/proc/stat`.
//!
//! The report then gives, for each of the worst windows, the difference between the
//! samples around it. Linux only: elsewhere, or if `/proc` cannot be read, nothing is
//! sampled and the report says so.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Time between samples.
pub const PERIOD: Duration = Duration::from_millis(50);

/// `/proc/stat` counts in these (USER_HZ is 100 on every Linux the generator runs on).
const TICK: Duration = Duration::from_millis(10);

/// Thread groups named per window, the busiest first.
const GROUPS_REPORTED: usize = 4;

/// One thread's scheduler times at one moment.
#[derive(Clone, Debug)]
pub struct ThreadTimes {
    pub tid: u32,
    pub name: String,
    /// Time on a CPU, ever.
    pub on_cpu: Duration,
    /// Time runnable but waiting for a CPU, ever.
    pub runnable: Duration,
}

/// The machine's idle and steal time since boot (or between two moments).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MachineTimes {
    /// Idle plus I/O wait, summed over all CPUs.
    pub idle: Duration,
    /// Time the host ran something else on our CPUs, summed over all CPUs.
    pub steal: Duration,
    /// The CPUs summed over: `/proc/stat`'s `cpuN` lines, every online CPU of the
    /// machine, whatever this process's affinity or cgroup allows it.
    pub cpus: u32,
}

impl MachineTimes {
    /// Now; `None` where `/proc/stat` cannot be read.
    pub fn now() -> Option<MachineTimes> {
        machine_times(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The time from `earlier` to `self`.
    pub fn since(self, earlier: MachineTimes) -> MachineTimes {
        MachineTimes {
            idle: self.idle.saturating_sub(earlier.idle),
            steal: self.steal.saturating_sub(earlier.steal),
            cpus: self.cpus,
        }
    }
}

/// The server's threads and the machine's idle and steal time at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub threads: Vec<ThreadTimes>,
    pub machine: MachineTimes,
}

/// Threads of one name (tokio's workers share one) over a span.
#[derive(Debug, PartialEq)]
pub struct GroupTimes {
    pub name: String,
    pub threads: usize,
    pub on_cpu: Duration,
    pub runnable: Duration,
}

/// What the server and the machine did between two samples.
#[derive(Debug, PartialEq)]
pub struct Activity {
    /// From the sample before the span to the one after it.
    pub span: Duration,
    pub idle: Duration,
    pub steal: Duration,
    /// The [`GROUPS_REPORTED`] groups with most CPU plus runnable time, the most first.
    pub busiest: Vec<GroupTimes>,
}

/// Samples a process's threads on a thread of its own until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling `pid`; `None` where `/proc` cannot be read.
    pub fn start(pid: u32) -> Option<Sampler> {
        sample(pid)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                if let Some(s) = sample(pid) {
                    samples.push(s);
                }
                std::thread::sleep(PERIOD);
            }
            // One more, so the last window has a sample after it.
            samples.extend(sample(pid));
            samples
        });
        Some(Sampler { stop, handle })
    }

    /// Stops sampling and returns the samples, oldest first.
    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// Reads one sample.
///
/// Names are read every time, not cached by id: a new thread carries its parent's name
/// until it renames itself, and a sample can catch it in between.
fn sample(pid: u32) -> Option<Sample> {
    let at = Instant::now();
    let machine = MachineTimes::now()?;
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Some(tid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse().ok())
        else {
            continue;
        };
        // A thread that exits between the listing and the reads is skipped.
        let Ok(schedstat) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        else {
            continue;
        };
        let Some((on_cpu, runnable)) = parse_schedstat(&schedstat) else {
            continue;
        };
        let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
            .map(|comm| comm.trim().to_string())
            .unwrap_or_default();
        threads.push(ThreadTimes {
            tid,
            name,
            on_cpu,
            runnable,
        });
    }
    Some(Sample {
        at,
        threads,
        machine,
    })
}

/// `schedstat`: nanoseconds on a CPU, nanoseconds runnable, time slices.
fn parse_schedstat(text: &str) -> Option<(Duration, Duration)> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    let on_cpu = fields.next()??;
    let runnable = fields.next()??;
    Some((Duration::from_nanos(on_cpu), Duration::from_nanos(runnable)))
}

/// `/proc/stat`'s first line: `cpu user nice system idle iowait irq softirq steal …`.
fn machine_times(stat: &str) -> Option<MachineTimes> {
    let line = stat.lines().next()?;
    let ticks: Vec<u64> = line
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let idle = ticks.get(3)? + ticks.get(4)?;
    let steal = *ticks.get(7)?;
    let cpus = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    Some(MachineTimes {
        idle: TICK * idle as u32,
        steal: TICK * steal as u32,
        cpus: u32::try_from(cpus).ok()?.max(1),
    })
}

/// What happened from the last sample at or before `from` to the first at or after
/// `to`; `None` when the samples do not cover a span that long.
pub fn activity(samples: &[Sample], from: Instant, to: Instant) -> Option<Activity> {
    let first = samples.iter().rposition(|s| s.at <= from).unwrap_or(0);
    let last = samples
        .iter()
        .position(|s| s.at >= to)
        .unwrap_or(samples.len().checked_sub(1)?);
    if last <= first {
        return None;
    }
    let (before, after) = (&samples[first], &samples[last]);
    let earlier: HashMap<u32, &ThreadTimes> = before.threads.iter().map(|t| (t.tid, t)).collect();
    let mut groups: Vec<GroupTimes> = Vec::new();
    for thread in &after.threads {
        // A thread born within the span counts from zero.
        let (cpu0, run0) = earlier
            .get(&thread.tid)
            .map_or((Duration::ZERO, Duration::ZERO), |t| (t.on_cpu, t.runnable));
        let on_cpu = thread.on_cpu.saturating_sub(cpu0);
        let runnable = thread.runnable.saturating_sub(run0);
        match groups.iter_mut().find(|g| g.name == thread.name) {
            Some(group) => {
                group.threads += 1;
                group.on_cpu += on_cpu;
                group.runnable += runnable;
            }
            None => groups.push(GroupTimes {
                name: thread.name.clone(),
                threads: 1,
                on_cpu,
                runnable,
            }),
        }
    }
    groups.sort_by(|a, b| {
        (b.on_cpu + b.runnable)
            .cmp(&(a.on_cpu + a.runnable))
            .then_with(|| a.name.cmp(&b.name))
    });
    groups.truncate(GROUPS_REPORTED);
    let machine = after.machine.since(before.machine);
    Some(Activity {
        span: after.at - before.at,
        idle: machine.idle,
        steal: machine.steal,
        busiest: groups,
    })
}

impl std::fmt::Display for Activity {
    /// `span 150 ms: idle 20, steal 0; leadroute-commit 140 on CPU / 5 runnable; …`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "span {:.0} ms: idle {:.0}, steal {:.0}",
            ms(self.span),
            ms(self.idle),
            ms(self.steal)
        )?;
        for g in &self.busiest {
            let count = if g.threads > 1 {
                format!(" ×{}", g.threads)
            } else {
                String::new()
            };
            write!(
                f,
                "; {}{count} {:.0} on CPU / {:.0} runnable",
                g.name,
                ms(g.on_cpu),
                ms(g.runnable)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn thread(tid: u32, name: &str, on_cpu: u64, runnable: u64) -> ThreadTimes {
        ThreadTimes {
            tid,
            name: name.into(),
            on_cpu: ms(on_cpu),
            runnable: ms(runnable),
        }
    }

    #[test]
    fn proc_files_parse() {
        assert_eq!(
            parse_schedstat("51349428 54459095 41\n"),
            Some((
                Duration::from_nanos(51_349_428),
                Duration::from_nanos(54_459_095)
            ))
        );
        assert_eq!(parse_schedstat("garbage"), None);
        let stat = "cpu  1163846 0 217092 331311 26675 0 49908 27039 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n\
             cpu1 1 2 3 4 5 6 7 8 9 10\nintr 1 2\n";
        assert_eq!(
            machine_times(stat),
            Some(MachineTimes {
                idle: TICK * (331_311 + 26_675),
                steal: TICK * 27_039,
                cpus: 2,
            })
        );
        assert_eq!(machine_times("intr 1 2 3"), None);
    }

    #[test]
    fn a_span_is_the_difference_of_the_samples_around_it_grouped_by_name() {
        let t0 = Instant::now();
        let at = |n: u64| t0 + ms(n);
        let samples = vec![
            Sample {
                at: at(0),
                threads: vec![
                    thread(1, "leadroute-commit", 100, 10),
                    thread(2, "tokio-runtime-w", 50, 0),
                    thread(3, "tokio-runtime-w", 60, 0),
                ],
                machine: MachineTimes {
                    idle: ms(1000),
                    steal: ms(10),
                    cpus: 2,
                },
            },
            Sample {
                at: at(50),
                threads: vec![
                    thread(1, "leadroute-commit", 140, 12),
                    thread(2, "tokio-runtime-w", 60, 1),
                    thread(3, "tokio-runtime-w", 61, 3),
                ],
                machine: MachineTimes {
                    idle: ms(1020),
                    steal: ms(10),
                    cpus: 2,
                },
            },
            Sample {
                at: at(100),
                threads: vec![
                    thread(1, "leadroute-commit", 190, 12),
                    thread(2, "tokio-runtime-w", 70, 4),
                    thread(3, "tokio-runtime-w", 62, 4),
                    // Born within the span: counted from zero.
                    thread(4, "leadroute-audit", 3, 0),
                ],
                machine: MachineTimes {
                    idle: ms(1030),
                    steal: ms(40),
                    cpus: 2,
                },
            },
        ];
        // 20..70 ms lies between the samples at 0 and 100.
        let a = activity(&samples, at(20), at(70)).unwrap();
        assert_eq!(a.span, ms(100));
        assert_eq!((a.idle, a.steal), (ms(30), ms(30)));
        assert_eq!(
            a.busiest,
            vec![
                GroupTimes {
                    name: "leadroute-commit".into(),
                    threads: 1,
                    on_cpu: ms(90),
                    runnable: ms(2),
                },
                GroupTimes {
                    name: "tokio-runtime-w".into(),
                    threads: 2,
                    on_cpu: ms(22),
                    runnable: ms(8),
                },
                GroupTimes {
                    name: "leadroute-audit".into(),
                    threads: 1,
                    on_cpu: ms(3),
                    runnable: ms(0),
                },
            ]
        );
        assert_eq!(
            a.to_string(),
            "span 100 ms: idle 30, steal 30; leadroute-commit 90 on CPU / 2 runnable; \
             tokio-runtime-w ×2 22 on CPU / 8 runnable; leadroute-audit 3 on CPU / 0 runnable"
        );
        // Exactly on the samples: just the one step between them.
        let b = activity(&samples, at(50), at(100)).unwrap();
        assert_eq!(b.span, ms(50));
        // Past the last sample: up to the last one; no samples at all: nothing.
        assert_eq!(activity(&samples, at(90), at(500)).unwrap().span, ms(50));
        assert_eq!(activity(&samples[..1], at(0), at(10)), None);
        assert_eq!(activity(&[], at(0), at(10)), None);
    }

    #[test]
    fn a_thread_that_renames_itself_is_reported_by_its_new_name() {
        // A new thread carries its parent's name until it renames itself; a sample taken
        // in between must not pin the old name on it.
        if sample(std::process::id()).is_none() {
            return;
        }
        let (renamed, wait_rename) = std::sync::mpsc::channel::<()>();
        let (sampled, wait_sample) = std::sync::mpsc::channel::<()>();
        let (done, wait_done) = std::sync::mpsc::channel::<()>();
        // An unnamed thread keeps the name it inherited until it writes its own.
        let thread = std::thread::spawn(move || {
            wait_sample.recv().unwrap();
            std::fs::write("/proc/thread-self/comm", "renamed-later").unwrap();
            renamed.send(()).unwrap();
            let _ = wait_done.recv();
        });
        let before = sample(std::process::id()).unwrap();
        sampled.send(()).unwrap();
        wait_rename.recv().unwrap();
        let after = sample(std::process::id()).unwrap();
        drop(done);
        thread.join().unwrap();
        let named = |s: &Sample| s.threads.iter().any(|t| t.name == "renamed-later");
        assert!(!named(&before));
        assert!(named(&after), "the renamed thread is missing");
    }

    #[test]
    fn sampling_this_process_sees_its_threads() {
        let Some(sampler) = Sampler::start(std::process::id()) else {
            // Not Linux: nothing to sample, and the report says so.
            assert!(!std::path::Path::new("/proc/self/task").exists());
            return;
        };
        // The thread spins, then stays alive until the last sample has been taken.
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let (spun, spinning) = std::sync::mpsc::channel();
        let busy = std::thread::Builder::new()
            .name("busy-sampled".into())
            .spawn(move || {
                let spin = Instant::now();
                let mut x = 0u64;
                while spin.elapsed() < 3 * PERIOD {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                spun.send(()).unwrap();
                let _ = wait.recv();
            })
            .unwrap();
        spinning.recv().unwrap();
        let samples = sampler.finish();
        drop(done);
        busy.join().unwrap();
        assert!(samples.len() >= 2, "{} samples", samples.len());
        let a = activity(&samples, samples[0].at, samples.last().unwrap().at).unwrap();
        let spun = a.busiest.iter().find(|g| g.name == "busy-sampled");
        assert!(
            spun.is_some_and(|g| g.on_cpu + g.runnable >= PERIOD),
            "the spinning thread shows: {a}"
        );
    }
}
