//! Compiles the eBPF programs in `bpf/` with clang. Without clang the crate still builds, with
//! eBPF off: odiglet then says why at start.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(bpf_built)");
    println!("cargo::rerun-if-changed=bpf");
    println!("cargo::rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let result = Command::new(&clang)
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-Wall",
            "-Werror",
        ])
        .arg("-c")
        .arg("bpf/trace.bpf.c")
        .arg("-o")
        .arg(out.join("trace.bpf.o"))
        .output();
    match result {
        Ok(output) if output.status.success() => println!("cargo::rustc-cfg=bpf_built"),
        Ok(output) => panic!(
            "{clang} could not compile bpf/trace.bpf.c:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => {
            println!("cargo::warning=eBPF tracing is not built: cannot run {clang}: {e}");
            println!(
                "cargo::rustc-env=ODIGOS_BPF_MISSING=this binary was built without clang ({clang}: {e}), so it has no eBPF programs"
            );
        }
    }
}
