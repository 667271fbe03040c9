//! With feature `keda`: generates KEDA's external scaler gRPC service from
//! `proto/externalscaler.proto`, with the `protoc` binary vendored by
//! `protoc-bin-vendored` (no system protoc needed), as the examples do.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "keda")]
    {
        println!("cargo:rerun-if-changed=proto/externalscaler.proto");
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        std::env::set_var("PROTOC", protoc);
        tonic_prost_build::configure()
            .compile_protos(&["proto/externalscaler.proto"], &["proto"])?;
    }
    Ok(())
}
