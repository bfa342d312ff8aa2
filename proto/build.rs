//! Compiles the OpAMP protocol with protox (a protobuf compiler in Rust, so no system
//! `protoc` is needed) and generates the Rust types with prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/opamp.proto");
    let descriptors = protox::compile(["opamp.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
