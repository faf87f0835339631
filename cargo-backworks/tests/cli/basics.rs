//! Invocation: as a cargo subcommand, directly, and with bad arguments.

use std::process::Command;

#[test]
fn runs_as_a_cargo_subcommand_and_reports_the_abi() {
    let output = Command::new(env!("CARGO_BIN_EXE_cargo-backworks"))
        .args(["backworks", "abi"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("backworks plugin ABI v1 "), "{stdout}");
    assert!(stdout.contains(backworks_plugin_sdk::TARGET), "{stdout}");
}

#[test]
fn runs_directly_too() {
    let output = Command::new(env!("CARGO_BIN_EXE_cargo-backworks"))
        .arg("abi")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .starts_with("backworks plugin ABI v1 ")
    );
}

#[test]
fn unknown_commands_are_usage_errors() {
    let output = Command::new(env!("CARGO_BIN_EXE_cargo-backworks"))
        .args(["backworks", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("unrecognized subcommand 'frobnicate'"),
        "{stderr}"
    );
}

#[test]
fn help_documents_every_command_and_the_exit_codes() {
    for (name, args) in [
        ("help", &["backworks", "--help"][..]),
        ("help_new", &["backworks", "new", "--help"][..]),
        ("help_build", &["backworks", "build", "--help"][..]),
        ("help_reproduce", &["backworks", "reproduce", "--help"][..]),
        ("help_check", &["backworks", "check", "--help"][..]),
        ("help_keygen", &["backworks", "keygen", "--help"][..]),
        ("help_sign", &["backworks", "sign", "--help"][..]),
        ("help_verify", &["backworks", "verify", "--help"][..]),
        ("help_publish", &["backworks", "publish", "--help"][..]),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_cargo-backworks"))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{name}");
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.contains("Exit codes:"), "{name}: {text}");
        insta::assert_snapshot!(name, text);
    }
}
