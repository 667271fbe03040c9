//! The crate's levels, as cudarc has them: no module imports one above it.
//!
//! From the bottom: `error`, `metrics`, `priority` (what every level uses);
//! `alloc` (the pure-Rust offset allocator); `backend` (where chunks,
//! streams and events come from); `gate` (weighted-fair compute slots);
//! `pool` (tenants, quotas, buffers, leases; inside it `config` < `device` <
//! `account` < `buf` < `tenant`); `share` (the tower layer). A module may
//! name its own level and those below, never one above, and no module but
//! `lib.rs` imports through the crate root's re-exports (`crate::PoolBuf`
//! would hide which level it reaches).

use std::path::Path;

const LEVELS: &[(&str, u32)] = &[
    ("error", 0),
    ("metrics", 0),
    ("priority", 0),
    ("alloc", 1),
    ("backend", 2),
    ("gate", 3),
    ("pool", 4),
    ("share", 5),
    ("lib", 6),
];

const POOL_LEVELS: &[(&str, u32)] = &[
    ("config", 0),
    ("device", 1),
    ("account", 2),
    ("buf", 3),
    ("tenant", 4),
    ("mod", 5),
];

fn level(table: &[(&str, u32)], name: &str) -> Option<u32> {
    table.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

/// The identifiers that follow `prefix` (`crate::` or `super::`) in the
/// code of `line`.
fn paths_after<'a>(line: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        out.push(&rest[..end]);
    }
    out
}

/// Level violations in the files given as (path below `src/`, source).
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, src) in files {
        let parts: Vec<&str> = path.trim_end_matches(".rs").split('/').collect();
        let module = parts[0];
        let Some(own) = level(LEVELS, module) else {
            found.push(format!(
                "{path}: module {module:?} has no level in tests/levels.rs"
            ));
            continue;
        };
        let pool_file = (module == "pool").then(|| parts.get(1).copied().unwrap_or("mod"));
        for (n, line) in src.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for target in paths_after(code, "crate::") {
                let at = format!("{path}:{}: {}", n + 1, line.trim());
                if target.starts_with(|c: char| c.is_ascii_uppercase()) {
                    if module != "lib" {
                        found.push(format!(
                            "{at}\n    imports through the crate root's re-export"
                        ));
                    }
                    continue;
                }
                match level(LEVELS, target) {
                    Some(l) if l > own => found.push(format!(
                        "{at}\n    level {own} ({module}) reaches up to level {l} ({target})"
                    )),
                    Some(_) => {}
                    None => found.push(format!("{at}\n    {target:?} has no level")),
                }
            }
            let Some(file) = pool_file else { continue };
            let own = level(POOL_LEVELS, file).unwrap_or(u32::MAX);
            for target in paths_after(code, "super::") {
                if let Some(l) = level(POOL_LEVELS, target) {
                    if l > own {
                        found.push(format!(
                            "{path}:{}: {}\n    pool/{file} reaches up to pool/{target}",
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    found
}

fn sources(dir: &Path, below: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, below, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(below).unwrap().to_string_lossy();
            out.push((
                rel.replace('\\', "/"),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
}

#[test]
fn no_module_imports_a_level_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    assert!(files.len() > 20, "the crate's sources were not found");
    let found = violations(&files);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

fn file(path: &str, src: &str) -> (String, String) {
    (path.to_owned(), src.to_owned())
}

#[test]
fn the_check_finds_upward_imports() {
    let clean = [
        file("lib.rs", "pub use pool::PoolBuf;\nuse crate::Tenant;"),
        file(
            "gate/wfq.rs",
            "use crate::priority::Priority;\nuse crate::metrics::M;",
        ),
        file(
            "backend/cuda.rs",
            "use crate::error::E; // crate::PoolBuf in a comment\n/// [`PoolBuf`](crate::PoolBuf)",
        ),
        file(
            "pool/buf.rs",
            "use super::account::TenantInner;\nuse super::device::Deferred;",
        ),
        file(
            "pool/tenant.rs",
            "use super::buf::PoolBuf;\nfn f() { my_crate::PoolBuf::new(); }",
        ),
    ];
    assert_eq!(violations(&clean), Vec::<String>::new());
    let planted = [
        file("gate/wfq.rs", "use crate::pool::Priority;"),
        file("backend/cuda.rs", "use crate::PoolBuf;"),
        file("alloc/mod.rs", "fn f(b: &crate::backend::HostBackend) {}"),
        file(
            "pool/device.rs",
            "use super::tenant::{Tenant, TenantInner};",
        ),
        file("pool/account.rs", "use super::buf::PoolBuf;"),
        file("share/service.rs", "use crate::lib::X;"),
        file("newlevel/mod.rs", "fn f() {}"),
    ];
    for case in planted {
        assert_eq!(
            violations(std::slice::from_ref(&case)).len(),
            1,
            "not found: {case:?}"
        );
    }
}
