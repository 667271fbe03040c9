//! Keeps libtorch's CUDA library linked into the server, so models can run
//! on a GPU: libtorch_cuda registers the CUDA backend from static
//! initialisers and no symbol references it, so the linker's `--as-needed`
//! would drop it (see examples/models/build.rs, which does the same for the
//! model runtime's own binaries).

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(libtorch) = std::env::var_os("LIBTORCH") {
        let cuda = std::path::Path::new(&libtorch).join("lib/libtorch_cuda.so");
        if cuda.exists() {
            // Binaries and test binaries only: a doc test runs from a
            // temporary folder, outside the rpath to the venv's libtorch.
            for target in ["bins", "tests"] {
                println!(
                    "cargo:rustc-link-arg-{target}=-Wl,--no-as-needed,-ltorch_cuda,--as-needed"
                );
            }
        }
    }
}
