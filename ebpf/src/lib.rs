//! odiglet instrumentation: process discovery, eBPF programs and span assembly.

pub mod process;
pub mod runtime;
