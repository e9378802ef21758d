//! CPU time of a process from /proc (Linux): the benchmarks print how much the server and the load generator took.

/// User plus system CPU seconds `pid` has used so far; 0 where /proc cannot tell.
pub fn seconds(pid: u32) -> f64 {
    of(&format!("/proc/{pid}/stat"))
}

/// The same for this process.
pub fn own_seconds() -> f64 {
    of("/proc/self/stat")
}

/// The cores this machine offers.
pub fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

fn of(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // The command name may hold spaces: the fields that follow start after its closing parenthesis.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second.max(1.0)
}
