//! `include_dir!` does not tell cargo which files it read: rebuild whenever anything under web/ changes.

fn main() {
    println!("cargo:rerun-if-changed=../../web");
}
