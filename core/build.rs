//! Builds `cagette-init`, the sandbox's tiny pid 1, as a freestanding static executable and leaves
//! it in OUT_DIR for `include_bytes!`. It needs only a C compiler (`$CC`, else `cc`): no libc.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/child/init.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CC");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("cagette-init");
    let target = env::var("TARGET").unwrap_or_default();
    let cc = env::var(format!("CC_{}", target.replace('-', "_")))
        .or_else(|_| env::var("CC"))
        .unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&cc)
        .args([
            "-Os", "-static", "-nostdlib", "-ffreestanding", "-fno-builtin", "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-fno-pie", "-no-pie",
            "-Wall", "-Werror", "-Wl,--build-id=none", "-Wl,-z,noexecstack", "-s", "-o",
        ])
        .arg(&out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("cagette needs a C compiler to build its init ({cc}): {e}"));
    assert!(status.success(), "compiling {src} with {cc} failed");
}
