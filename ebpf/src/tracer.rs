//! The programs of `bpf/trace.bpf.c`, loaded and attached once for odiglet's lifetime. What is
//! traced changes through the `traced` map alone: no program is detached or reloaded, so their
//! ids stay the same across any config change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::Program;
use aya::{Btf, Ebpf, EbpfLoader};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The most bytes of one call the programs capture.
pub const MAX_CAPTURE: u32 = 1023;

#[cfg(bpf_built)]
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/trace.bpf.o"));

/// Why eBPF tracing cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    #[error("{0}")]
    NotBuilt(&'static str),
    #[error("eBPF needs root (running as uid {0})")]
    NotRoot(u32),
    #[error("cannot load the eBPF programs: {0}")]
    Load(String),
    #[error("cannot attach {program} to tracepoint {category}/{name}: {error}")]
    Attach {
        program: String,
        category: String,
        name: String,
        error: String,
    },
    #[error("eBPF map {map}: {error}")]
    Map { map: &'static str, error: String },
}

/// The loaded programs and the map that says which processes they trace.
pub struct Tracer {
    ebpf: Ebpf,
    traced: HashMap<MapData, u32, u32>,
    conns: HashMap<MapData, u64, u8>,
    lost: PerCpuArray<MapData, u64>,
}

/// The events the programs send, in the order they happened (per CPU).
///
/// The programs wake the reader only once hundreds of data events wait, so a busy process
/// costs one wake-up per hundreds of events: the reader drains the rest on a timer of its own.
pub struct Events {
    ring: AsyncFd<RingBuf<MapData>>,
}

/// How a traced process's connection was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepted: the process is the server.
    Server,
    /// Connected: the process is the client.
    Client,
}

/// Which way bytes went, from the traced process's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Received,
    Sent,
}

/// One event, borrowing the ring buffer. Times are nanoseconds since boot
/// (`CLOCK_MONOTONIC`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Exec {
        pid: u32,
    },
    Exit {
        pid: u32,
    },
    Open {
        pid: u32,
        tid: u32,
        fd: i32,
        role: Role,
        at: u64,
        local: SocketAddr,
        remote: SocketAddr,
    },
    Data {
        pid: u32,
        tid: u32,
        fd: i32,
        direction: Direction,
        /// When the call returned.
        at: u64,
        /// Bytes the call moved; `bytes` holds the first of them.
        len: u64,
        bytes: &'a [u8],
    },
    Close {
        pid: u32,
        fd: i32,
        at: u64,
    },
    /// Traced process `parent` forked `pid`, which is traced as well.
    Fork {
        pid: u32,
        parent: u32,
    },
    /// `new_fd` is a duplicate of connection `fd`.
    Dup {
        pid: u32,
        fd: i32,
        new_fd: i32,
    },
}

impl Tracer {
    /// Loads and attaches every program, tracing no process yet.
    pub fn load() -> Result<(Tracer, Events), TracerError> {
        available()?;
        // Parsed once, for the relocations and the tp_btf program: it is large.
        let btf = Btf::from_sys_fs().map_err(|e| TracerError::Load(format!("kernel BTF: {e}")))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .load(programs()?)
            .map_err(|e| TracerError::Load(error_chain(&e)))?;
        mount_tracefs();
        let names: Vec<String> = ebpf.programs().map(|(name, _)| name.to_string()).collect();
        for name in names {
            let (category, tracepoint) = tracepoint_of(&name);
            let attach_error = |error: &dyn std::error::Error| TracerError::Attach {
                program: name.clone(),
                category: category.into(),
                name: tracepoint.clone(),
                error: error_chain(error),
            };
            match ebpf.program_mut(&name).expect("listed") {
                Program::TracePoint(program) => {
                    program.load().map_err(|e| attach_error(&e))?;
                    program
                        .attach(category, &tracepoint)
                        .map_err(|e| attach_error(&e))?;
                }
                Program::BtfTracePoint(program) => {
                    program
                        .load(&tracepoint, &btf)
                        .map_err(|e| attach_error(&e))?;
                    program.attach().map_err(|e| attach_error(&e))?;
                }
                other => {
                    let kind = format!("{:?}", other.prog_type());
                    return Err(TracerError::Load(format!(
                        "{name}: unexpected program type {kind}"
                    )));
                }
            }
        }
        let map_error = |map: &'static str| {
            move |e: aya::maps::MapError| TracerError::Map {
                map,
                error: e.to_string(),
            }
        };
        let traced = HashMap::try_from(ebpf.take_map("traced").expect("defined in trace.bpf.c"))
            .map_err(map_error("traced"))?;
        let conns = HashMap::try_from(ebpf.take_map("conns").expect("defined in trace.bpf.c"))
            .map_err(map_error("conns"))?;
        let lost = PerCpuArray::try_from(ebpf.take_map("lost").expect("defined in trace.bpf.c"))
            .map_err(map_error("lost"))?;
        let ring = RingBuf::try_from(ebpf.take_map("events").expect("defined in trace.bpf.c"))
            .map_err(map_error("events"))?;
        // SAFETY: the ring buffer owns its descriptor and moves into the AsyncFd, which
        // deregisters it before dropping it.
        #[allow(unsafe_code)]
        let ring =
            unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|e| {
                TracerError::Map {
                    map: "events",
                    error: e.to_string(),
                }
            })?;
        Ok((
            Tracer {
                ebpf,
                traced,
                conns,
                lost,
            },
            Events { ring },
        ))
    }

    /// Traces process `pid`, capturing up to `capture` bytes of each call.
    pub fn trace(&mut self, pid: u32, capture: u32) -> Result<(), TracerError> {
        self.traced
            .insert(pid, capture.min(MAX_CAPTURE), 0)
            .map_err(|e| TracerError::Map {
                map: "traced",
                error: e.to_string(),
            })
    }

    /// Stops tracing `pid`; nothing happens if it was not traced.
    pub fn untrace(&mut self, pid: u32) {
        let _ = self.traced.remove(&pid);
    }

    /// The processes traced now.
    pub fn traced(&self) -> Vec<u32> {
        self.traced.keys().filter_map(Result::ok).collect()
    }

    /// The kernel's ids of the attached programs, by name.
    pub fn program_ids(&self) -> Vec<(String, u32)> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| Some((name.to_string(), program.info().ok()?.id())))
            .collect()
    }

    /// Drops what the programs kept of a process that exited: the kernel closed its
    /// descriptors without a `close` call to see.
    pub fn forget(&mut self, pid: u32) {
        let conns: Vec<u64> = self
            .conns
            .keys()
            .filter_map(Result::ok)
            .filter(|key| (key >> 32) as u32 == pid)
            .collect();
        for key in conns {
            let _ = self.conns.remove(&key);
        }
    }

    /// Connections the programs follow now (`conns`): back to its base once they close.
    pub fn connections(&self) -> usize {
        self.conns.keys().count()
    }

    /// Events the ring buffer had no room for, since the programs were loaded.
    pub fn lost(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map_or(0, |per_cpu| per_cpu.iter().sum())
    }
}

impl Events {
    /// Waits until the programs wake the reader; then `drain`.
    pub async fn ready(&mut self) -> std::io::Result<()> {
        // Cleared before draining: an event written meanwhile wakes the next wait.
        self.ring.readable_mut().await?.clear_ready();
        Ok(())
    }

    /// Hands every event waiting to `handle`, in place.
    pub fn drain(&mut self, mut handle: impl FnMut(&Event<'_>)) {
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            if let Some(event) = parse(&item) {
                handle(&event);
            }
        }
    }
}

/// Whether tracing can start here: the programs are built in and this process is root.
pub fn available() -> Result<(), TracerError> {
    programs()?;
    let uid = rustix::process::getuid().as_raw();
    if uid != 0 {
        return Err(TracerError::NotRoot(uid));
    }
    Ok(())
}

/// Whether this binary carries the programs, or why not.
fn programs() -> Result<&'static [u8], TracerError> {
    #[cfg(bpf_built)]
    return Ok(PROGRAMS);
    #[cfg(not(bpf_built))]
    return Err(TracerError::NotBuilt(env!("ODIGOS_BPF_MISSING")));
}

/// `enter_read` → `syscalls`/`sys_enter_read`; `process_exec` → `sched`/`sched_process_exec`
/// (for a `tp_btf` program, only the name counts).
fn tracepoint_of(program: &str) -> (&'static str, String) {
    match program.split_once('_') {
        Some(("enter" | "exit", syscall)) => (
            "syscalls",
            format!(
                "sys_{}_{syscall}",
                program.split('_').next().unwrap_or_default()
            ),
        ),
        _ => ("sched", format!("sched_{program}")),
    }
}

/// Tracepoints are found through tracefs, which a fresh container or VM may not have mounted.
fn mount_tracefs() {
    let mounted = |dir: &str| std::path::Path::new(dir).join("events").is_dir();
    if mounted("/sys/kernel/tracing") || mounted("/sys/kernel/debug/tracing") {
        return;
    }
    let _ = std::process::Command::new("mount")
        .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
        .status();
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// The layouts of `struct head`, `struct conn_event` and `struct data_event` in trace.bpf.c.
const EV_EXEC: u8 = 1;
const EV_EXIT: u8 = 2;
const EV_ACCEPT: u8 = 3;
const EV_CONNECT: u8 = 4;
const EV_RECV: u8 = 5;
const EV_SEND: u8 = 6;
const EV_CLOSE: u8 = 7;
const EV_DUP: u8 = 8;
const EV_FORK: u8 = 9;
const HEAD: usize = 32;

fn parse(bytes: &[u8]) -> Option<Event<'_>> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let kind = *bytes.first()?;
    let pid = u32_at(4)?;
    let tid = u32_at(8)?;
    let fd = u32_at(12)? as i32;
    let (at, ret) = (u64_at(16)?, u64_at(24)? as i64);
    Some(match kind {
        EV_EXEC => Event::Exec { pid },
        EV_EXIT => Event::Exit { pid },
        EV_CLOSE => Event::Close { pid, fd, at },
        EV_FORK => Event::Fork {
            pid,
            parent: fd as u32,
        },
        EV_DUP => Event::Dup {
            pid,
            fd,
            new_fd: ret as i32,
        },
        EV_ACCEPT | EV_CONNECT => {
            let family = u16_at(HEAD)?;
            let address = |at: usize, port: u16| -> Option<SocketAddr> {
                let ip = if family == 2 {
                    IpAddr::V4(Ipv4Addr::from(
                        <[u8; 4]>::try_from(bytes.get(at..at + 4)?).ok()?,
                    ))
                } else {
                    let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(bytes.get(at..at + 16)?).ok()?);
                    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
                };
                Some(SocketAddr::new(ip, port))
            };
            Event::Open {
                pid,
                tid,
                fd,
                role: if kind == EV_ACCEPT {
                    Role::Server
                } else {
                    Role::Client
                },
                at,
                local: address(HEAD + 8, u16_at(HEAD + 2)?)?,
                remote: address(HEAD + 24, u16_at(HEAD + 4)?)?,
            }
        }
        EV_RECV | EV_SEND => {
            let captured = u32_at(HEAD)? as usize;
            Event::Data {
                pid,
                tid,
                fd,
                direction: if kind == EV_RECV {
                    Direction::Received
                } else {
                    Direction::Sent
                },
                at,
                len: ret.max(0) as u64,
                bytes: bytes.get(HEAD + 8..HEAD + 8 + captured)?,
            }
        }
        _ => return None,
    })
}
