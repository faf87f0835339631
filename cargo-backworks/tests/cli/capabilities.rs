//! Declared capabilities (`[package.metadata.backworks.capabilities]`), as a
//! plugin author writes them: `build` records them in the metadata record,
//! `check` shows them, an invalid declaration names `Cargo.toml` and the
//! field, and a record that cannot carry them is refused.

use std::path::Path;

use backworks_plugin_sdk::{TARGET, Value, json};

use crate::build::{cargo_backworks, cargo_backworks_command, new_plugin, stderr};

/// Appends `table` to the `Cargo.toml` in `plugin_dir`.
fn declare(plugin_dir: &Path, table: &str) {
    let manifest = plugin_dir.join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("\n[package.metadata.backworks.capabilities]\n");
    text.push_str(table);
    std::fs::write(&manifest, text).unwrap();
}

/// `build --dist-dir <dir>/dist` of `plugin_dir`, with `extra_env` set.
fn build_into(plugin_dir: &Path, dist: &Path, extra_env: &[(&str, &str)]) -> std::process::Output {
    let mut command =
        cargo_backworks_command(plugin_dir, &["build", "--dist-dir", dist.to_str().unwrap()]);
    command.env_remove("BACKWORKS_PLUGIN_CAPABILITIES");
    command.envs(extra_env.iter().copied());
    command.output().unwrap()
}

fn library(dist: &Path, name: &str) -> String {
    crate::build::dist_path_in(dist, name, TARGET)
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_declaration_is_recorded_and_shown_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = new_plugin(dir.path(), "needy");
    declare(
        &plugin_dir,
        "network = [\"api.example.com:443\", \"10.0.0.5:*\"]\n\
         files = { read = [\"/etc/hostname\"], write = [\"/var/lib/needy\"] }\n\
         env = [\"LANG\", \"NEEDY_TOKEN\"]\n",
    );
    let dist = dir.path().join("dist");
    let output = build_into(&plugin_dir, &dist, &[]);
    assert!(output.status.success(), "build failed: {}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains(
            "needs network api.example.com:443, 10.0.0.5:*; read /etc/hostname; write /var/lib/needy; env LANG, NEEDY_TOKEN"
        ),
        "{log}"
    );

    let library = library(&dist, "needy");
    let output = cargo_backworks(&plugin_dir, &["check", "--json", &library]);
    assert!(output.status.success(), "check failed: {}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["files"][0]["metadata"]["capabilities"],
        json!({
            "network": ["api.example.com:443", "10.0.0.5:*"],
            "files": {"read": ["/etc/hostname"], "write": ["/var/lib/needy"]},
            "env": ["LANG", "NEEDY_TOKEN"],
        }),
        "{report:#}"
    );

    let output = cargo_backworks(&plugin_dir, &["check", &library]);
    assert!(output.status.success(), "check failed: {}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(
            "\n  needs:     network api.example.com:443, 10.0.0.5:*; read /etc/hostname; write /var/lib/needy; env LANG, NEEDY_TOKEN\n"
        ),
        "{text}"
    );
}

/// An empty table declares that the plugin needs nothing: every field is
/// denied, which is not the same as declaring nothing.
#[test]
fn an_empty_table_declares_no_needs_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = new_plugin(dir.path(), "hermit");
    declare(&plugin_dir, "");
    let dist = dir.path().join("dist");
    let output = build_into(&plugin_dir, &dist, &[]);
    assert!(output.status.success(), "build failed: {}", stderr(&output));
    let output = cargo_backworks(&plugin_dir, &["check", "--json", &library(&dist, "hermit")]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["files"][0]["metadata"]["capabilities"],
        json!({"network": "none", "files": {"read": [], "write": []}, "env": []}),
        "{report:#}"
    );
}

/// A plugin that declares nothing gets no declaration in its record, even
/// when the variable `export_plugin!` reads is set in the user's shell.
#[test]
fn without_a_table_a_stray_variable_cannot_leak_into_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = new_plugin(dir.path(), "unsaid");
    let dist = dir.path().join("dist");
    let output = build_into(
        &plugin_dir,
        &dist,
        &[("BACKWORKS_PLUGIN_CAPABILITIES", r#"{"network":"any"}"#)],
    );
    assert!(output.status.success(), "build failed: {}", stderr(&output));
    assert!(!stderr(&output).contains("needs"), "{}", stderr(&output));
    let library = library(&dist, "unsaid");
    let output = cargo_backworks(&plugin_dir, &["check", "--json", &library]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["files"][0]["metadata"]["capabilities"],
        Value::Null,
        "{report:#}"
    );
    let output = cargo_backworks(&plugin_dir, &["check", &library]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("\n  needs:     nothing declared (the process tier's defaults)\n"),
        "{text}"
    );
}

/// Each invalid declaration is refused before cargo runs, naming the
/// manifest and the field and saying what was expected (exit code 2).
#[test]
fn an_invalid_declaration_names_the_manifest_and_the_field() {
    let names: Vec<String> = (0..1500).map(|i| format!("\"VARIABLE_{i:05}\"")).collect();
    let too_large = format!("env = [{}]\n", names.join(", "));
    for (name, table) in [
        (
            "relative_path",
            "files = { read = [\"/etc/hostname\", \"relative/path\"] }\n",
        ),
        ("network_number", "network = 80\n"),
        ("unknown_field", "network = \"none\"\nsockets = true\n"),
        // More than the 16 KiB of JSON a record carries.
        ("too_large", &too_large),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let plugin_dir = new_plugin(dir.path(), "wrong");
        declare(&plugin_dir, table);
        let dist = dir.path().join("dist");
        let output = build_into(&plugin_dir, &dist, &[]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(!dist.exists(), "{name}: built despite the error");
        let root = dir.path().canonicalize().unwrap();
        insta::assert_snapshot!(
            format!("invalid_capabilities_{name}"),
            stderr(&output).replace(root.to_str().unwrap(), "[DIR]")
        );
    }
}

/// A record as the SDK wrote it before capabilities (v1's 512 bytes, no
/// extension) cannot carry the declaration: the build fails and says to
/// update the SDK, instead of shipping a library without what its author
/// declared.
#[test]
fn a_record_without_the_extension_is_refused_when_the_manifest_declares() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = new_plugin(dir.path(), "olden");
    declare(&plugin_dir, "network = \"any\"\n");
    std::fs::write(
        plugin_dir.join("src/lib.rs"),
        r#"//! The exports of a plugin built with an SDK before capabilities: a v1
//! record of 512 bytes.
use backworks_plugin_sdk::abi::MetadataRecord;

#[unsafe(no_mangle)]
#[used]
#[allow(non_upper_case_globals)]
#[cfg_attr(target_vendor = "apple", unsafe(link_section = "__DATA,__bwmeta"))]
#[cfg_attr(not(target_vendor = "apple"), unsafe(link_section = ".bwmeta"))]
pub static backworks_plugin_metadata: MetadataRecord = MetadataRecord::new(
    backworks_plugin_sdk::SDK_VERSION,
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_VERSION"),
    env!("CARGO_PKG_DESCRIPTION"),
    0,
);

#[unsafe(no_mangle)]
pub extern "C" fn plugin_info() {}

#[unsafe(no_mangle)]
pub extern "C" fn plugin_vtable() {}
"#,
    )
    .unwrap();
    let dist = dir.path().join("dist");
    let output = build_into(&plugin_dir, &dist, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let log = stderr(&output);
    let manifest = plugin_dir.canonicalize().unwrap().join("Cargo.toml");
    assert!(
        log.contains(&format!(
            "its metadata record carries no capabilities, but {} declares `network any`: the plugin's backworks-plugin-sdk predates declared capabilities",
            manifest.display()
        )),
        "{log}"
    );
    assert!(
        log.contains("cargo update -p backworks-plugin-sdk"),
        "{log}"
    );
    assert!(
        log.contains("error: 1 target failed, 0 libraries built:"),
        "{log}"
    );
}
