//! Puts `linker/` on the link search path of every binary that depends on this crate, so that
//! `-Timage.ld` (see `.cargo/config.toml`) finds the shared layout.

fn main() {
    let linker = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../linker");
    let linker = linker.canonicalize().expect("linker/ exists beside kernel/");
    println!("cargo:rustc-link-search={}", linker.display());
    println!("cargo:rerun-if-changed={}", linker.join("image.ld").display());
}
