//! Generates the `convoy.examples.Mlp` messages, server and client from
//! `proto/mlp.proto`, with the `protoc` binary vendored by
//! `protoc-bin-vendored` (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::compile_protos("proto/mlp.proto")?;
    Ok(())
}
