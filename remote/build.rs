//! With feature `etcd`: generates the etcd v3 client (KV, Watch, Lease)
//! from `proto/etcd.proto`, with the `protoc` binary vendored by
//! `protoc-bin-vendored` (no system protoc needed), as the examples do.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "etcd")]
    {
        println!("cargo:rerun-if-changed=proto/etcd.proto");
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        std::env::set_var("PROTOC", protoc);
        tonic_prost_build::configure()
            .build_server(false)
            .compile_protos(&["proto/etcd.proto"], &["proto"])?;
    }
    Ok(())
}
