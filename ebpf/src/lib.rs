//! odiglet instrumentation: process discovery, eBPF programs and span assembly.
