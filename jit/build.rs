//! Builds the kernel library objects link against (`kernels/lib.rs`, see
//! `src/kernel_library.rs`): the full-width kernels compiled by rustc as
//! a `#![no_std]` static library for x86_64-unknown-linux-gnu, reduced to
//! the one object that defines them (rustc's archive also carries
//! compiler-builtins, 4 MB that no kernel uses), with the library's own
//! `memset` made local, then checked: no undefined symbol, every global
//! symbol `shufflekit_`. It also bounds the stack a call into the library
//! needs (the sum of every function's frame: no kernel recurses), which
//! the object headers add to their stack figure.
//!
//! Only when the crate itself is built for x86-64 (the only hosts that
//! write such objects). Uses binutils (`ar`, `objcopy`, `nm`), which any
//! linux-gnu Rust toolchain's linker brings.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels/lib.rs");
    println!("cargo:rerun-if-changed=src/wide.rs");
    println!("cargo:rerun-if-changed=src/wide_tiles.rs");
    println!("cargo:rerun-if-changed=src/wide_window.rs");
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64") {
        return;
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let work = out.join("kernels-build");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("creating the kernel library's build directory");

    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let full = work.join("libfull.a");
    run(Command::new(rustc)
        .args(["--edition", "2021", "--crate-type", "staticlib"])
        .args(["--crate-name", "shufflekit_kernels"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .args(["-C", "panic=abort", "-C", "opt-level=3", "-C", "lto=fat"])
        .args(["-C", "codegen-units=1", "-C", "debuginfo=0"])
        .arg("-o")
        .arg(&full)
        .arg(manifest.join("kernels/lib.rs")));

    // The LTO object: every kernel and the parts of `core` they use.
    let members = output(Command::new("ar").arg("t").arg(&full));
    let ours: Vec<&str> = members
        .lines()
        .filter(|m| m.contains("shufflekit_kernels") && m.ends_with(".o"))
        .collect();
    let [member] = ours[..] else {
        panic!("expected one kernel object in rustc's archive, found {ours:?}");
    };
    run(Command::new("ar")
        .arg("x")
        .arg(&full)
        .arg(member)
        .current_dir(&work));
    let object = work.join("shufflekit_kernels.o");
    run(Command::new("objcopy")
        .args(["--strip-debug", "--localize-symbol=memset"])
        .arg(work.join(member))
        .arg(&object));

    let undefined = output(Command::new("nm").arg("-u").arg(&object));
    assert!(
        undefined.trim().is_empty(),
        "the kernel library would need symbols from elsewhere (libc?): {undefined}\n\
         give it its own (see kernels/lib.rs)"
    );
    let globals = output(
        Command::new("nm")
            .args(["-g", "--defined-only"])
            .arg(&object),
    );
    for line in globals.lines() {
        let name = line.split_whitespace().last().unwrap_or("");
        assert!(
            name.starts_with("shufflekit_"),
            "the kernel library exports `{name}`, which may collide with the user's symbols"
        );
    }

    let stack = stack_bound(&output(
        Command::new("objdump")
            .args(["-d", "--no-show-raw-insn"])
            .arg(&object),
    ));
    std::fs::write(
        out.join("kernels_stack.rs"),
        format!("pub(crate) const KERNELS_STACK_BYTES: usize = {stack};\n"),
    )
    .expect("writing kernels_stack.rs");

    let library = out.join("libshufflekit_kernels.a");
    let _ = std::fs::remove_file(&library);
    // `D`: no timestamps or owners, so the library is reproducible.
    run(Command::new("ar")
        .arg("crsD")
        .arg(&library)
        .arg("shufflekit_kernels.o")
        .current_dir(&work));
}

/// An upper bound of the stack any call chain inside the object uses: per
/// function its return address, 64 bytes of realignment, its pushes and
/// its `sub $N, %rsp`, summed over all functions (a chain visits each at
/// most once, as nothing recurses). A frame of run-time size would have no
/// bound: the build fails.
fn stack_bound(disassembly: &str) -> u64 {
    let mut bytes = 0;
    for line in disassembly.lines() {
        let instruction = line.split('\t').nth(1).unwrap_or("").trim();
        if line.ends_with(">:") {
            bytes += 8 + 64;
        } else if instruction.starts_with("push") {
            bytes += 8;
        } else if let Some(operands) = instruction.strip_prefix("sub ") {
            let operands = operands.trim();
            if operands.ends_with(",%rsp") {
                let hex = operands
                    .strip_prefix("$0x")
                    .and_then(|o| o.strip_suffix(",%rsp"))
                    .unwrap_or_else(|| panic!("a kernel frame of run-time size: {line}"));
                bytes += u64::from_str_radix(hex, 16).expect("a frame size in hex");
            }
        }
    }
    bytes
}

fn run(cmd: &mut Command) {
    output(cmd);
}

fn output(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
