//! Generates the gRPC code of the gateway (`proto/gateway.proto`) and of the RocketMQ proxy's API
//! (`proto/rocketmq.proto`) with a pure-Rust protobuf compiler (protox), so building needs no
//! `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/gateway.proto");
    println!("cargo:rerun-if-changed=proto/rocketmq.proto");
    let descriptors = protox::compile(["gateway.proto", "rocketmq.proto"], ["proto"])?;
    tonic_prost_build::configure().build_transport(false).compile_fds(descriptors)?;
    Ok(())
}
