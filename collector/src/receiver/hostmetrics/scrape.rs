//! The scrapers of `hostmetrics`: what Linux says of the machine in `/proc` and `/sys` (under
//! `root_path`), as the OpenTelemetry Collector names it: metric names, units and attributes
//! of its hostmetrics receiver.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Attributes of a series, in order.
pub type Attributes = Vec<(&'static str, String)>;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Int(i64),
    Double(f64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Gauge,
    /// A cumulative sum since `start` (nanoseconds since the epoch).
    Sum {
        monotonic: bool,
        start: u64,
    },
}

/// One metric's series.
#[derive(Debug, PartialEq)]
pub struct Measured {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    pub kind: Kind,
    pub series: Vec<(Attributes, Number)>,
}

/// Where a scraper reads, and what it reads often.
pub struct Host {
    root: PathBuf,
    /// Clock ticks per second (`USER_HZ`).
    ticks: f64,
    /// When the machine booted, in nanoseconds since the epoch.
    pub boot: u64,
}

impl Host {
    pub fn new(root: &Path) -> Result<Host, String> {
        let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
        let mut host = Host {
            root: root.to_path_buf(),
            ticks,
            boot: 0,
        };
        let stat = host.read("proc/stat")?;
        host.boot = field(&stat, "btime")
            .ok_or("proc/stat has no btime")?
            .saturating_mul(1_000_000_000);
        Ok(host)
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn read(&self, relative: &str) -> Result<String, String> {
        let path = self.path(relative);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn cumulative(&self, monotonic: bool) -> Kind {
        Kind::Sum {
            monotonic,
            start: self.boot,
        }
    }

    pub fn cpu(&self) -> Result<Vec<Measured>, String> {
        const STATES: [&str; 8] = [
            "user",
            "nice",
            "system",
            "idle",
            "wait",
            "interrupt",
            "softirq",
            "steal",
        ];
        let stat = self.read("proc/stat")?;
        let mut series = Vec::new();
        for line in stat.lines() {
            let mut fields = line.split_whitespace();
            let Some(cpu) = fields
                .next()
                .filter(|c| c.len() > 3 && c.starts_with("cpu"))
            else {
                continue;
            };
            for (state, ticks) in STATES.iter().zip(fields) {
                let seconds = ticks.parse::<f64>().unwrap_or(0.0) / self.ticks;
                series.push((
                    vec![("cpu", cpu.to_string()), ("state", state.to_string())],
                    Number::Double(seconds),
                ));
            }
        }
        Ok(vec![Measured {
            name: "system.cpu.time",
            unit: "s",
            description: "Total seconds each logical CPU spent on each mode.",
            kind: self.cumulative(true),
            series,
        }])
    }

    pub fn memory(&self) -> Result<Vec<Measured>, String> {
        let text = self.read("proc/meminfo")?;
        let kib = |key: &str| -> i64 {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
                .unwrap_or(0)
                * 1024
        };
        let (total, free, buffers, cached) = (
            kib("MemTotal"),
            kib("MemFree"),
            kib("Buffers"),
            kib("Cached"),
        );
        let (reclaimable, unreclaimable) = (kib("SReclaimable"), kib("SUnreclaim"));
        let used = total - free - buffers - cached - reclaimable;
        let series = [
            ("used", used),
            ("free", free),
            ("buffered", buffers),
            ("cached", cached),
            ("slab_reclaimable", reclaimable),
            ("slab_unreclaimable", unreclaimable),
        ]
        .into_iter()
        .map(|(state, bytes)| (vec![("state", state.to_string())], Number::Int(bytes)))
        .collect();
        Ok(vec![Measured {
            name: "system.memory.usage",
            unit: "By",
            description: "Bytes of memory in use.",
            kind: self.cumulative(false),
            series,
        }])
    }

    pub fn load(&self) -> Result<Vec<Measured>, String> {
        let text = self.read("proc/loadavg")?;
        let averages: Vec<f64> = text
            .split_whitespace()
            .take(3)
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        let names = [
            "system.cpu.load_average.1m",
            "system.cpu.load_average.5m",
            "system.cpu.load_average.15m",
        ];
        Ok(names
            .into_iter()
            .zip(averages)
            .map(|(name, value)| Measured {
                name,
                unit: "{thread}",
                description: "Average CPU load over the period.",
                kind: Kind::Gauge,
                series: vec![(Vec::new(), Number::Double(value))],
            })
            .collect())
    }

    pub fn disk(&self) -> Result<Vec<Measured>, String> {
        let text = self.read("proc/diskstats")?;
        let mut io = Vec::new();
        let mut operations = Vec::new();
        let mut io_time = Vec::new();
        let mut operation_time = Vec::new();
        let mut weighted = Vec::new();
        let mut pending = Vec::new();
        let mut merged = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 14 {
                continue;
            }
            let n = |i: usize| fields[i].parse::<i64>().unwrap_or(0);
            let device = fields[2].to_string();
            let on = |direction: &str| {
                vec![
                    ("device", device.clone()),
                    ("direction", direction.to_string()),
                ]
            };
            io.push((on("read"), Number::Int(n(5) * 512)));
            io.push((on("write"), Number::Int(n(9) * 512)));
            operations.push((on("read"), Number::Int(n(3))));
            operations.push((on("write"), Number::Int(n(7))));
            merged.push((on("read"), Number::Int(n(4))));
            merged.push((on("write"), Number::Int(n(8))));
            operation_time.push((on("read"), Number::Double(n(6) as f64 / 1000.0)));
            operation_time.push((on("write"), Number::Double(n(10) as f64 / 1000.0)));
            let device_only = vec![("device", device.clone())];
            pending.push((device_only.clone(), Number::Int(n(11))));
            io_time.push((device_only.clone(), Number::Double(n(12) as f64 / 1000.0)));
            weighted.push((device_only, Number::Double(n(13) as f64 / 1000.0)));
        }
        let sum = self.cumulative(true);
        Ok(vec![
            Measured {
                name: "system.disk.io",
                unit: "By",
                description: "Disk bytes transferred.",
                kind: sum,
                series: io,
            },
            Measured {
                name: "system.disk.operations",
                unit: "{operation}",
                description: "Disk operations count.",
                kind: sum,
                series: operations,
            },
            Measured {
                name: "system.disk.io_time",
                unit: "s",
                description: "Time disk spent activated.",
                kind: sum,
                series: io_time,
            },
            Measured {
                name: "system.disk.operation_time",
                unit: "s",
                description: "Time spent in disk operations.",
                kind: sum,
                series: operation_time,
            },
            Measured {
                name: "system.disk.weighted_io_time",
                unit: "s",
                description: "Time disk spent activated multiplied by the queue length.",
                kind: sum,
                series: weighted,
            },
            Measured {
                name: "system.disk.pending_operations",
                unit: "{operation}",
                description: "The queue size of pending I/O operations.",
                kind: self.cumulative(false),
                series: pending,
            },
            Measured {
                name: "system.disk.merged",
                unit: "{operation}",
                description: "The number of disk reads/writes merged into single physical disk access operations.",
                kind: sum,
                series: merged,
            },
        ])
    }

    pub fn filesystem(&self) -> Result<Vec<Measured>, String> {
        let mounts = self.read("proc/mounts")?;
        // Filesystems with no device of their own (proc, sysfs, tmpfs, cgroup, ...) are left
        // out, as the collector does by default.
        let filesystems = self.read("proc/filesystems").unwrap_or_default();
        let virtual_types: std::collections::HashSet<&str> = filesystems
            .lines()
            .filter_map(|l| l.strip_prefix("nodev"))
            .map(str::trim)
            .collect();
        let mut usage = Vec::new();
        let mut inodes = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [device, mountpoint, kind, options, ..] = fields[..] else {
                continue;
            };
            let mountpoint = unescape(mountpoint);
            if virtual_types.contains(kind) || !seen.insert(mountpoint.clone()) {
                continue;
            }
            let Some(stat) = statvfs(&self.root.join(mountpoint.trim_start_matches('/'))) else {
                continue;
            };
            if stat.blocks == 0 {
                continue;
            }
            let mode = if options.split(',').any(|o| o == "ro") {
                "ro"
            } else {
                "rw"
            };
            let on = |state: &str| {
                vec![
                    ("device", device.to_string()),
                    ("mode", mode.to_string()),
                    ("mountpoint", mountpoint.clone()),
                    ("type", kind.to_string()),
                    ("state", state.to_string()),
                ]
            };
            let bytes = |blocks: u64| Number::Int((blocks * stat.fragment) as i64);
            usage.push((on("used"), bytes(stat.blocks - stat.free)));
            usage.push((on("free"), bytes(stat.available)));
            usage.push((
                on("reserved"),
                bytes(stat.free.saturating_sub(stat.available)),
            ));
            inodes.push((
                on("used"),
                Number::Int(stat.files.saturating_sub(stat.files_free) as i64),
            ));
            inodes.push((on("free"), Number::Int(stat.files_free as i64)));
        }
        let kind = self.cumulative(false);
        Ok(vec![
            Measured {
                name: "system.filesystem.usage",
                unit: "By",
                description: "Filesystem bytes used.",
                kind,
                series: usage,
            },
            Measured {
                name: "system.filesystem.inodes.usage",
                unit: "{inode}",
                description: "FileSystem inodes used.",
                kind,
                series: inodes,
            },
        ])
    }

    pub fn network(&self) -> Result<Vec<Measured>, String> {
        let text = self.read("proc/net/dev")?;
        let mut io = Vec::new();
        let mut packets = Vec::new();
        let mut errors = Vec::new();
        let mut dropped = Vec::new();
        for line in text.lines().skip(2) {
            let Some((device, counters)) = line.split_once(':') else {
                continue;
            };
            let n: Vec<i64> = counters
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            if n.len() < 12 {
                continue;
            }
            let device = device.trim().to_string();
            let on = |direction: &str| {
                vec![
                    ("device", device.clone()),
                    ("direction", direction.to_string()),
                ]
            };
            io.extend([
                (on("receive"), Number::Int(n[0])),
                (on("transmit"), Number::Int(n[8])),
            ]);
            packets.extend([
                (on("receive"), Number::Int(n[1])),
                (on("transmit"), Number::Int(n[9])),
            ]);
            errors.extend([
                (on("receive"), Number::Int(n[2])),
                (on("transmit"), Number::Int(n[10])),
            ]);
            dropped.extend([
                (on("receive"), Number::Int(n[3])),
                (on("transmit"), Number::Int(n[11])),
            ]);
        }
        let sum = self.cumulative(true);
        Ok(vec![
            Measured {
                name: "system.network.io",
                unit: "By",
                description: "The number of bytes transmitted and received.",
                kind: sum,
                series: io,
            },
            Measured {
                name: "system.network.packets",
                unit: "{packet}",
                description: "The number of packets transferred.",
                kind: sum,
                series: packets,
            },
            Measured {
                name: "system.network.errors",
                unit: "{error}",
                description: "The number of errors encountered.",
                kind: sum,
                series: errors,
            },
            Measured {
                name: "system.network.dropped",
                unit: "{packet}",
                description: "The number of packets dropped.",
                kind: sum,
                series: dropped,
            },
            self.connections(),
        ])
    }

    /// TCP connections by state, from `/proc/net/tcp` and `tcp6`.
    fn connections(&self) -> Measured {
        const STATES: [&str; 11] = [
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT_1",
            "FIN_WAIT_2",
            "TIME_WAIT",
            "CLOSE",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "CLOSING",
        ];
        let mut counts = [0i64; 11];
        for table in ["proc/net/tcp", "proc/net/tcp6"] {
            for line in self.read(table).unwrap_or_default().lines().skip(1) {
                let state = line
                    .split_whitespace()
                    .nth(3)
                    .and_then(|s| usize::from_str_radix(s, 16).ok());
                if let Some(state) = state.filter(|s| (1..=11).contains(s)) {
                    counts[state - 1] += 1;
                }
            }
        }
        Measured {
            name: "system.network.connections",
            unit: "{connection}",
            description: "The number of connections.",
            kind: self.cumulative(false),
            series: STATES
                .iter()
                .zip(counts)
                .map(|(state, count)| {
                    (
                        vec![
                            ("protocol", "tcp".to_string()),
                            ("state", state.to_string()),
                        ],
                        Number::Int(count),
                    )
                })
                .collect(),
        }
    }

    pub fn paging(&self) -> Result<Vec<Measured>, String> {
        let vmstat = self.read("proc/vmstat")?;
        let n = |key: &str| field(&vmstat, key).unwrap_or(0) as i64;
        let mut usage = Vec::new();
        for line in self.read("proc/swaps").unwrap_or_default().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [device, _, size, used, ..] = fields[..] else {
                continue;
            };
            let kib = |v: &str| v.parse::<i64>().unwrap_or(0) * 1024;
            let on =
                |state: &str| vec![("device", device.to_string()), ("state", state.to_string())];
            usage.push((on("used"), Number::Int(kib(used))));
            usage.push((on("free"), Number::Int(kib(size) - kib(used))));
        }
        let on = |direction: &str, kind: &str| {
            vec![
                ("direction", direction.to_string()),
                ("type", kind.to_string()),
            ]
        };
        let operations = vec![
            (on("page_in", "major"), Number::Int(n("pswpin"))),
            (on("page_out", "major"), Number::Int(n("pswpout"))),
            (on("page_in", "minor"), Number::Int(n("pgpgin"))),
            (on("page_out", "minor"), Number::Int(n("pgpgout"))),
        ];
        let faults = vec![
            (
                vec![("type", "major".to_string())],
                Number::Int(n("pgmajfault")),
            ),
            (
                vec![("type", "minor".to_string())],
                Number::Int(n("pgfault") - n("pgmajfault")),
            ),
        ];
        Ok(vec![
            Measured {
                name: "system.paging.usage",
                unit: "By",
                description: "Swap (unix) or pagefile (windows) usage.",
                kind: self.cumulative(false),
                series: usage,
            },
            Measured {
                name: "system.paging.operations",
                unit: "{operation}",
                description: "The number of paging operations.",
                kind: self.cumulative(true),
                series: operations,
            },
            Measured {
                name: "system.paging.faults",
                unit: "{fault}",
                description: "The number of page faults.",
                kind: self.cumulative(true),
                series: faults,
            },
        ])
    }

    pub fn processes(&self) -> Result<Vec<Measured>, String> {
        let stat = self.read("proc/stat")?;
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for pid in self.pids()? {
            let Ok(text) = self.read(&format!("proc/{pid}/stat")) else {
                continue;
            };
            let status = match text
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
            {
                Some('R') => "running",
                Some('S') => "sleeping",
                Some('D') => "blocked",
                Some('Z') => "zombies",
                Some('T' | 't') => "stopped",
                Some('I') => "idle",
                Some('W') => "paging",
                _ => "unknown",
            };
            *counts.entry(status).or_default() += 1;
        }
        Ok(vec![
            Measured {
                name: "system.processes.count",
                unit: "{process}",
                description: "Total number of processes in each state.",
                kind: self.cumulative(false),
                series: counts
                    .into_iter()
                    .map(|(status, count)| {
                        (vec![("status", status.to_string())], Number::Int(count))
                    })
                    .collect(),
            },
            Measured {
                name: "system.processes.created",
                unit: "{process}",
                description: "Total number of created processes.",
                kind: self.cumulative(true),
                series: vec![(
                    Vec::new(),
                    Number::Int(field(&stat, "processes").unwrap_or(0) as i64),
                )],
            },
        ])
    }

    /// The pids in `/proc`.
    fn pids(&self) -> Result<Vec<u32>, String> {
        let proc = self.path("proc");
        let entries = std::fs::read_dir(&proc).map_err(|e| format!("{}: {e}", proc.display()))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect())
    }

    /// Each process that `wanted` takes (by its executable's name): its resource attributes and
    /// metrics. What a process does not let be read (another user's `io`) is left out.
    pub fn process(
        &self,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<(Attributes, Vec<Measured>)>, String> {
        let users = users(&self.read("etc/passwd").unwrap_or_default());
        let page = rustix::param::page_size() as i64;
        let mut processes = Vec::new();
        for pid in self.pids()? {
            let Ok(stat) = self.read(&format!("proc/{pid}/stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let command = head.split_once('(').map_or("", |(_, c)| c).to_string();
            // Fields from the state on (the 3rd of stat(5)).
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.len() < 22 {
                continue;
            }
            let n = |i: usize| fields[i - 3].parse::<i64>().unwrap_or(0);
            let exe = std::fs::read_link(self.path(&format!("proc/{pid}/exe")))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = Path::new(&exe)
                .file_name()
                .map_or(command.clone(), |n| n.to_string_lossy().into_owned());
            if !wanted(&name) {
                continue;
            }
            let cmdline =
                std::fs::read(self.path(&format!("proc/{pid}/cmdline"))).unwrap_or_default();
            let command_line = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            let uid = self.read(&format!("proc/{pid}/status")).ok().and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("Uid:")?
                        .split_whitespace()
                        .next()
                        .map(String::from)
                })
            });
            let mut resource: Attributes = vec![
                ("process.pid", pid.to_string()),
                ("process.parent_pid", n(4).to_string()),
                ("process.executable.name", name),
                ("process.executable.path", exe),
                ("process.command", command),
                ("process.command_line", command_line),
            ];
            if let Some(owner) = uid.map(|u| users.get(&u).cloned().unwrap_or(u)) {
                resource.push(("process.owner", owner));
            }
            let start = self.boot + (n(22) as f64 / self.ticks * 1e9) as u64;
            let cumulative = |monotonic| Kind::Sum { monotonic, start };
            let seconds = |ticks: i64| Number::Double(ticks as f64 / self.ticks);
            let mut metrics = vec![
                Measured {
                    name: "process.cpu.time",
                    unit: "s",
                    description: "Total CPU seconds broken down by different states.",
                    kind: cumulative(true),
                    series: vec![
                        (vec![("state", "user".to_string())], seconds(n(14))),
                        (vec![("state", "system".to_string())], seconds(n(15))),
                    ],
                },
                Measured {
                    name: "process.memory.usage",
                    unit: "By",
                    description: "The amount of physical memory in use.",
                    kind: cumulative(false),
                    series: vec![(Vec::new(), Number::Int(n(24) * page))],
                },
                Measured {
                    name: "process.memory.virtual",
                    unit: "By",
                    description: "Virtual memory size.",
                    kind: cumulative(false),
                    series: vec![(Vec::new(), Number::Int(n(23)))],
                },
            ];
            if let Ok(io) = self.read(&format!("proc/{pid}/io")) {
                let bytes = |key: &str| Number::Int(field_colon(&io, key).unwrap_or(0) as i64);
                metrics.push(Measured {
                    name: "process.disk.io",
                    unit: "By",
                    description: "Disk bytes transferred.",
                    kind: cumulative(true),
                    series: vec![
                        (vec![("direction", "read".to_string())], bytes("read_bytes")),
                        (
                            vec![("direction", "write".to_string())],
                            bytes("write_bytes"),
                        ),
                    ],
                });
            }
            processes.push((resource, metrics));
        }
        Ok(processes)
    }
}

/// The number after `key` on its line (`btime 1700000000`).
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The number after `key:` on its line (`read_bytes: 4096`).
fn field_colon(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// User names by uid, from `/etc/passwd`.
fn users(passwd: &str) -> BTreeMap<String, String> {
    passwd
        .lines()
        .filter_map(|l| {
            let mut fields = l.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?;
            Some((uid.to_string(), name.to_string()))
        })
        .collect()
}

/// A mount point as `/proc/mounts` writes it: space, tab, newline and backslash as octal.
fn unescape(text: &str) -> String {
    text.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

struct Usage {
    blocks: u64,
    free: u64,
    available: u64,
    fragment: u64,
    files: u64,
    files_free: u64,
}

fn statvfs(path: &Path) -> Option<Usage> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(Usage {
        blocks: stat.f_blocks,
        free: stat.f_bfree,
        available: stat.f_bavail,
        fragment: stat.f_frsize,
        files: stat.f_files,
        files_free: stat.f_ffree,
    })
}
