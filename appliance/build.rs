//! Build script of the `kith` binary: hands the linker `startup.ld`, which
//! gathers the functions a start of `kith serve` runs in front of the rest of
//! the code. The kernel maps a binary's code 64 KiB around every page first
//! touched, and the code run at start is otherwise spread over all of it, so
//! a box at rest kept most of the binary in memory (docs/benchmarks.md, "Idle
//! RSS"). `scripts/startup-order.sh` makes the script again from a traced
//! start of a build without it (`KITH_NO_STARTUP_LD=1`: valgrind counts code
//! outside `.text` to no object); names the linker does not find are ignored.

use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=startup.ld");
    println!("cargo::rerun-if-env-changed=KITH_NO_STARTUP_LD");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let wanted = std::env::var_os("KITH_NO_STARTUP_LD").is_none();
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let script = Path::new(&dir).join("startup.ld");
    if linux && wanted && script.is_file() {
        println!("cargo::rustc-link-arg-bin=kith=-Wl,-T,{}", script.display());
    }
}
