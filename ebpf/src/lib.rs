//! odiglet instrumentation: process discovery, eBPF programs and span assembly.

pub mod agent;
pub mod http;
pub mod otlp;
pub mod pods;
pub mod process;
pub mod runtime;
pub mod tracer;
