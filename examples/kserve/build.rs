//! Generates the `inference.GRPCInferenceService` messages, server and
//! client from `proto/grpc_predict_v2.proto`, with the `protoc` binary
//! vendored by `protoc-bin-vendored` (no system protoc needed).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Tensor bytes stay reference-counted slices of the received
        // message instead of copies.
        .bytes(".inference")
        .file_descriptor_set_path(out.join("inference_descriptor.bin"))
        .compile_protos(&["proto/grpc_predict_v2.proto"], &["proto"])?;
    Ok(())
}
