//! A server's memory and CPU from /proc, and the host's.

/// `pid` and its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let mut i = 0;
    while i < pids.len() {
        let p = pids[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                pids.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// PSS and RSS in KB of `pid` and its children.
pub fn memory(pid: u32) -> (u64, u64) {
    let pids = tree(pid);
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    pids.iter().fold((0, 0), |(pss, rss), p| {
        let rollup = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        (pss + field(&rollup, "Pss:"), rss + field(&rollup, "Rss:"))
    })
}

/// User + system CPU time of a process tree, in ms.
pub fn tree_cpu_ms(pid: u32) -> f64 {
    tree(pid).iter().map(|p| cpu_ms(&p.to_string())).sum()
}

/// Busy CPU time of the whole host (all processes, kernel included), in ms: what is left after
/// the server's and the load generator's own is the machine's other load during a run.
pub fn host_cpu_ms() -> f64 {
    // cpu user nice system idle iowait irq softirq steal ...
    [0, 1, 2, 5, 6, 7].iter().map(|&i| host_field_ms(i)).sum()
}

/// The host's softirq time in ms: loopback TCP delivers packets in softirqs, which a kernel with
/// IRQ time accounting charges to no process, so it shows up as "other" load.
pub fn host_softirq_ms() -> f64 {
    host_field_ms(6)
}

/// Field `i` (after the name) of /proc/stat's `cpu` line, in ms.
fn host_field_ms(i: usize) -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let ticks = line
        .split_whitespace()
        .skip(1)
        .nth(i)
        .and_then(|x| x.parse::<f64>().ok())
        .unwrap_or(0.0);
    ticks * ms_per_tick()
}

/// User + system CPU time of a process (`self` or a pid), in ms.
pub fn cpu_ms(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15, in clock ticks; `after` starts at field 3.
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) * ms_per_tick()
}

/// Time `pid`'s threads have spent on a CPU, in ms, from /proc/<pid>/task/*/schedstat (in ns):
/// for a process as light as Redis per change, where /proc/<pid>/stat's 10 ms ticks are too
/// coarse.
pub fn on_cpu_ms(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e6
}

/// The length of the clock tick /proc counts CPU time in, in ms: `USER_HZ`, which the kernel
/// may be built with other than 100.
fn ms_per_tick() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for a name it does not know.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1000.0 / hz as f64
    } else {
        10.0
    }
}
