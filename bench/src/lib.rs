//! Benchmark tools for odigos-rs: an OTLP load generator, a counting sink, and a runner that
//! measures our collector and rotel side by side under the same load.

pub mod cluster;
pub mod control;
pub mod ebpf;
pub mod filelog;
pub mod fleet;
pub mod load;
pub mod request;
pub mod runner;
pub mod sink;
pub mod swap;
