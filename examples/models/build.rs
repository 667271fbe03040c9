//! Builds the libtorch allocator hooks (`csrc/convoy_hooks.cpp`, feature
//! `torch`) and keeps libtorch's CUDA library linked.
//!
//! The shim is compiled with the `cc` crate against the headers of the same
//! libtorch tch links (`LIBTORCH`, set for the examples workspace in
//! `examples/.cargo/config.toml`: the venv's torch wheel), with the wheel's
//! C++ ABI and OpenMP. It must use the OpenMP runtime libtorch uses (the
//! wheel's `lib/libgomp.so.1`): its worker threads are the ones it tags with
//! a tenant. With feature `cuda` and the CUDA runtime headers of the wheel's
//! `nvidia/cu13` package present, the CUDA hooks (pluggable allocator,
//! external streams) are compiled in too and `convoy_shim_cuda` is set for
//! the Rust side; without the headers (or with `CONVOY_HOOKS_NO_CUDA=1`) the
//! CPU hooks build alone (a warning says so).
//!
//! libtorch_cuda registers the CUDA backend from static initialisers and is
//! never referenced by a symbol, so the linker's `--as-needed` drops it and
//! libtorch then sees no GPU. Linking it with `--no-as-needed` keeps it.
//! Link arguments from a build script reach only this package's own
//! targets: a binary crate that uses this one on CUDA needs the same line in
//! its own build script.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=CONVOY_HOOKS_NO_CUDA");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/convoy_hooks.cpp");
    println!("cargo::rustc-check-cfg=cfg(convoy_shim_cuda)");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        if std::env::var_os("CARGO_FEATURE_TORCH").is_some() {
            panic!(
                "feature `torch` needs LIBTORCH (the libtorch the allocator hooks compile \
                 against; examples/.cargo/config.toml sets it to the venv's torch)"
            );
        }
        return;
    };
    let lib = libtorch.join("lib");
    let cuda_lib = lib.join("libtorch_cuda.so").exists();
    if cuda_lib {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    if std::env::var_os("CARGO_FEATURE_TORCH").is_some() {
        build_shim(&libtorch, &lib, cuda_lib);
    }
}

fn build_shim(libtorch: &Path, lib: &Path, cuda_lib: bool) {
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/convoy_hooks.cpp")
        .include(libtorch.join("include"))
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .flag("-fopenmp")
        // libtorch's headers are not warning-clean; the shim's own code is
        // checked by the same compiler in CI with them.
        .flag_if_supported("-Wno-unused-parameter");
    let cuda_include = libtorch.join("../nvidia/cu13/include");
    let cuda = std::env::var_os("CARGO_FEATURE_CUDA").is_some();
    // CONVOY_HOOKS_NO_CUDA=1 builds the CPU hooks alone even where the
    // headers are (to check that build).
    let headers = std::env::var_os("CONVOY_HOOKS_NO_CUDA")
        .is_none()
        .then(|| crt_include(&cuda_include))
        .flatten();
    if cuda {
        if let (true, Some(crt)) = (cuda_lib, headers) {
            build
                .define("CONVOY_HOOKS_CUDA", None)
                .include(&cuda_include)
                .include(crt);
            println!("cargo:rustc-cfg=convoy_shim_cuda");
        } else {
            println!(
                "cargo:warning=feature `cuda`: no libtorch_cuda or CUDA headers ({}); \
                 the allocator hooks are built for the CPU only",
                cuda_include.display()
            );
        }
    }
    build.compile("convoy_hooks");
    println!("cargo:rustc-link-search=native={}", lib.display());
    // The OpenMP runtime libtorch itself loads (same soname): one set of
    // worker threads.
    println!("cargo:rustc-link-lib=dylib:+verbatim=libgomp.so.1");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    if cuda && cuda_lib {
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
    }
}

/// Where `crt/host_defines.h` is, which the CUDA runtime headers include:
/// the `nvidia/cu13` wheel itself when it has it, else the CUDA headers the
/// venv's triton wheel ships (its `crt/` directory only: macros and
/// compiler definitions, searched after cu13's own headers). `None` without
/// cu13's `cuda_runtime_api.h` or any `crt/`.
fn crt_include(cuda_include: &Path) -> Option<PathBuf> {
    if !cuda_include.join("cuda_runtime_api.h").exists() {
        return None;
    }
    let triton = cuda_include.join("../../../triton/backends/nvidia/include");
    [cuda_include.to_path_buf(), triton]
        .into_iter()
        .find(|d| d.join("crt/host_defines.h").exists())
}
