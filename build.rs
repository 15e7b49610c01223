//! Build script: enables the AVX-512 variants of the template-learning kernel
//! (`src/factorization/rank_one_kl.rs`) and of the sparse transcription
//! kernel (`src/factorization/sparse.rs`) when the compiler supports them.
//! `#[target_feature(enable = "avx512f")]` and the AVX-512 intrinsics are
//! stable since Rust 1.89, above the crate's minimum (1.85): older compilers
//! build the AVX2 and portable variants only.

use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(sscnmf_avx512)");
    println!("cargo:rerun-if-changed=build.rs");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    // `rustc 1.95.0 (59807616e 2026-04-14)`
    let version = Command::new(rustc).arg("--version").output().ok().and_then(|o| String::from_utf8(o.stdout).ok());
    let minor = version.as_deref().and_then(|v| {
        let mut parts = v.split_whitespace().nth(1)?.split('.');
        let major: u32 = parts.next()?.parse().ok()?;
        let minor: u32 = parts.next()?.parse().ok()?;
        Some(if major > 1 { u32::MAX } else { minor })
    });
    if minor.is_some_and(|m| m >= 89) {
        println!("cargo:rustc-cfg=sscnmf_avx512");
    }
}
