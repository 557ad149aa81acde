//! Properties of the kernel binary itself.

use std::process::Command;
use trapless_tests::root;

/// The directory of the LLVM tools rustup installs (`llvm-tools` in rust-toolchain.toml).
fn llvm_tools() -> std::path::PathBuf {
    let rustc = |args: &[&str]| {
        let output = Command::new("rustc").args(args).current_dir(root()).output().expect("rustc runs");
        String::from_utf8(output.stdout).unwrap()
    };
    let sysroot = rustc(&["--print", "sysroot"]);
    let host = rustc(&["-vV"]).lines().find_map(|line| line.strip_prefix("host: ").map(String::from)).unwrap();
    std::path::Path::new(sysroot.trim()).join("lib/rustlib").join(host).join("bin")
}

/// EL2 runs between a partition's instructions without saving its FP/SIMD/SVE registers, so
/// the kernel must not contain a single instruction that touches them.
#[test]
fn the_kernel_never_touches_fp_or_simd_registers() {
    let kernel = trapless_tools::cargo::build_kernel(&root()).expect("the kernel builds");
    let output = Command::new(llvm_tools().join("llvm-objdump"))
        .args(["-d", "--no-show-raw-insn"])
        .arg(&kernel)
        .output()
        .expect("llvm-objdump from the llvm-tools component runs");
    assert!(output.status.success(), "llvm-objdump: {}", String::from_utf8_lossy(&output.stderr));
    let listing = String::from_utf8(output.stdout).unwrap();
    // Instruction lines: "<address>:<spaces>\t<mnemonic>\t<operands>".
    let instructions: Vec<&str> =
        listing.lines().filter(|line| line.split('\t').next().is_some_and(|address| address.trim_end().ends_with(':'))).collect();
    assert!(instructions.len() > 1000, "disassembled the whole kernel");
    let offenders: Vec<&&str> = instructions.iter().filter(|line| uses_fp_register(line)).collect();
    assert!(offenders.is_empty(), "FP/SIMD registers used at EL2:\n{offenders:#?}");
}

/// Whether an objdump instruction line names an FP/SIMD/SVE register (`q0`, `d8`, `v1.16b`,
/// `z3.d`, `p0`, ...) among its operands.
fn uses_fp_register(line: &str) -> bool {
    let operands = line.split('\t').nth(2).unwrap_or("");
    operands.split([',', ' ']).any(|operand| {
        let operand = operand.trim_matches(|c: char| "[]{}!".contains(c));
        let mut chars = operand.chars();
        matches!(chars.next(), Some('q' | 'd' | 's' | 'h' | 'b' | 'v' | 'z' | 'p'))
            && operand[1..].split(['.', '/']).next().is_some_and(|number| number.parse::<u8>().is_ok_and(|n| n < 32))
    })
}

#[test]
fn the_detector_sees_fp_operands_and_only_those() {
    for line in ["   10:     \tldp\tq0, q1, [x0]", "   14:     \tfmov\td8, x1", "   18:     \tmovi\tv1.16b, #0x0", "   1c:     \tst1d\t{z3.d}, p0, [x2]"] {
        assert!(uses_fp_register(line), "{line}");
    }
    for line in ["   20:     \tldp\tx0, x1, [sp, #0x10]", "   24:     \tb.ne\t0x10 <s1>", "   28:     \tmsr\tsctlr_el2, x0", "   2c:     \tret"] {
        assert!(!uses_fp_register(line), "{line}");
    }
}
