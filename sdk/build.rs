//! Records the target triple the SDK is compiled for, so that `export_plugin!`
//! can write it into the plugin's metadata record (the plugin is always built
//! for the same target as its copy of the SDK).

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| String::from("unknown"));
    println!("cargo:rustc-env=BACKWORKS_SDK_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
