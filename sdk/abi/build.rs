//! Records the target triple this crate is compiled for (`TARGET`), so that
//! `export_plugin!` can write it into a plugin's metadata record and a host can
//! compare it with a plugin's (the plugin is always built for the same target
//! as its copy of this crate).

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| String::from("unknown"));
    println!("cargo:rustc-env=BACKWORKS_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
