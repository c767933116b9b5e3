//! Caps a process's CPU with a cgroup, so that an overload run can reach a true
//! multiple of the server's capacity with the generator on the same machine.
//!
//! Linux only, and it needs permission to create cgroups (root here). cgroup v2 when
//! `/sys/fs/cgroup` is the unified hierarchy (`cpu.max`), else v1's `cpu` controller
//! (`cpu.cfs_quota_us`). The period is 10 ms, so a throttled server waits at most
//! that long at a time.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// Scheduler period of the quota, in µs.
const PERIOD_US: u64 = 10_000;

/// A cgroup holding one process, removed (once the process is gone) on drop.
pub struct CpuLimit {
    dir: PathBuf,
}

impl CpuLimit {
    /// Moves `pid` (all its threads) into a new cgroup allowed `percent` of one core.
    pub fn apply(pid: u32, percent: u32) -> Result<CpuLimit> {
        if percent == 0 {
            bail!("a CPU quota of 0% would stop the server");
        }
        let quota = PERIOD_US * u64::from(percent) / 100;
        let name = format!("leadroute-loadgen-{pid}");
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let dir = if v2 {
            PathBuf::from("/sys/fs/cgroup").join(&name)
        } else {
            PathBuf::from("/sys/fs/cgroup/cpu").join(&name)
        };
        std::fs::create_dir(&dir)
            .with_context(|| format!("creating cgroup {} (needs root)", dir.display()))?;
        let limit = CpuLimit { dir };
        let write = |file: &str, value: String| {
            let path = limit.dir.join(file);
            std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))
        };
        if v2 {
            write("cpu.max", format!("{quota} {PERIOD_US}"))?;
        } else {
            write("cpu.cfs_period_us", PERIOD_US.to_string())?;
            write("cpu.cfs_quota_us", quota.to_string())?;
        }
        write("cgroup.procs", pid.to_string())?;
        Ok(limit)
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        // The process has exited by now (the server is dropped first); an empty
        // cgroup directory is removed with rmdir.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("could not remove cgroup {}", self.dir.display());
    }
}
