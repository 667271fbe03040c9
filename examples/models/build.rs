//! Keeps libtorch's CUDA library linked into this crate's binaries and tests.
//!
//! libtorch_cuda registers the CUDA backend from static initialisers and is
//! never referenced by a symbol, so the linker's `--as-needed` drops it and
//! libtorch then sees no GPU. Linking it with `--no-as-needed` keeps it.
//! Link arguments from a build script reach only this package's own
//! targets: a binary crate that uses this one on CUDA needs the same line in
//! its own build script.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        return;
    };
    let lib = PathBuf::from(libtorch).join("lib");
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
