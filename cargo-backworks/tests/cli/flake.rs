//! The nix flake (`flake.nix`, `flake.lock`): what can be checked without
//! fetching its inputs. It parses; its lock is a real version-7 lock of
//! exactly the flake's inputs; its toolchain is `rust-toolchain.toml`; and
//! the README documents the pins the lock holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn read(name: &str) -> String {
    let path = workspace().join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn lock() -> Value {
    serde_json::from_str(&read("flake.lock")).unwrap_or_else(|e| {
        panic!("flake.lock is not valid JSON: {e}; regenerate it with `nix flake lock`")
    })
}

/// `root`'s inputs in flake.lock: input name to node name.
fn root_inputs(lock: &Value) -> BTreeMap<String, String> {
    let root = lock["root"]
        .as_str()
        .expect("flake.lock: `root` must name the root node");
    let inputs = lock["nodes"][root]["inputs"]
        .as_object()
        .unwrap_or_else(|| panic!("flake.lock: node `{root}` has no `inputs` object"));
    inputs
        .iter()
        .map(|(name, node)| {
            let node = node.as_str().unwrap_or_else(|| {
                panic!("flake.lock: root input `{name}` must name a node, not follow a path")
            });
            (name.clone(), node.to_owned())
        })
        .collect()
}

/// The top-level inputs declared in flake.nix's `inputs = { ... };` block,
/// each with the `follows` it declares (`inputs.X.follows = "Y"`): input
/// name to (its input X to followed input Y).
fn flake_inputs(flake: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let start = flake
        .find("inputs = {")
        .expect("flake.nix: no `inputs = { ... };` block")
        + "inputs = {".len();
    let mut inputs = BTreeMap::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for line in flake[start..].lines() {
        let line = line.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        if depth == 0 {
            if line.starts_with('}') {
                return inputs;
            }
            current = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            assert!(
                !current.is_empty(),
                "flake.nix: cannot read an input name from `{line}`"
            );
            inputs.entry(current.clone()).or_insert_with(BTreeMap::new);
        }
        // `inputs.X.follows = "Y";`, inside the input's block or as
        // `name.inputs.X.follows = "Y";` on one line.
        if let Some(at) = line.find("inputs.") {
            let rest = &line[at + "inputs.".len()..];
            if let Some((input, target)) = rest.split_once(".follows") {
                let target = target.trim_start().trim_start_matches('=').trim();
                let target = target.trim_end_matches(';').trim_matches('"');
                inputs
                    .get_mut(&current)
                    .unwrap()
                    .insert(input.to_owned(), target.to_owned());
            }
        }
        depth += line.matches('{').count();
        depth = depth
            .checked_sub(line.matches('}').count())
            .expect("flake.nix: unbalanced braces in `inputs`");
    }
    panic!("flake.nix: the `inputs` block is not closed");
}

fn is_hex_rev(rev: &str) -> bool {
    rev.len() == 40
        && rev
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[test]
fn flake_nix_parses() {
    let output = match Command::new("nix-instantiate")
        .args(["--parse", "flake.nix"])
        .current_dir(workspace())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "nix-instantiate is not installed, so flake.nix cannot be checked: \
             install it with `apt-get install nix-bin` (scripts/setup does)"
        ),
        Err(e) => panic!("cannot run nix-instantiate: {e}"),
    };
    assert!(
        output.status.success(),
        "flake.nix does not parse (nix-instantiate --parse flake.nix):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn flake_lock_pins_exactly_the_flake_inputs() {
    let lock = lock();
    assert_eq!(
        lock["version"], 7,
        "flake.lock: `version` must be 7, the format nix writes; regenerate it with `nix flake lock`"
    );
    let nodes = lock["nodes"]
        .as_object()
        .expect("flake.lock: `nodes` must be an object");
    let root = lock["root"]
        .as_str()
        .expect("flake.lock: `root` must be a string");

    for (name, node) in nodes.iter().filter(|(name, _)| *name != root) {
        let locked = &node["locked"];
        for field in ["owner", "repo"] {
            assert!(
                locked[field].as_str().is_some_and(|s| !s.is_empty()),
                "flake.lock: node `{name}` has no locked.{field}"
            );
        }
        assert_eq!(
            locked["type"], "github",
            "flake.lock: node `{name}`: locked.type must be github"
        );
        let rev = locked["rev"].as_str().unwrap_or("");
        assert!(
            is_hex_rev(rev),
            "flake.lock: node `{name}`: locked.rev `{rev}` is not a 40-digit lower-case hex commit"
        );
        let nar = locked["narHash"].as_str().unwrap_or("");
        assert!(
            nar.starts_with("sha256-") && nar.len() == "sha256-".len() + 44 && nar.ends_with('='),
            "flake.lock: node `{name}`: locked.narHash `{nar}` is not an SRI sha256 hash"
        );
        assert!(
            locked["lastModified"].as_u64().is_some(),
            "flake.lock: node `{name}` has no locked.lastModified"
        );
        assert!(
            node["original"].is_object(),
            "flake.lock: node `{name}` has no `original`"
        );
    }

    let flake = flake_inputs(&read("flake.nix"));
    let in_lock = root_inputs(&lock);
    assert_eq!(
        in_lock.keys().collect::<BTreeSet<_>>(),
        flake.keys().collect::<BTreeSet<_>>(),
        "flake.lock's root inputs differ from flake.nix's `inputs`; run `nix flake lock`"
    );
    for (name, follows) in &flake {
        let node = &nodes[&in_lock[name]];
        for (input, target) in follows {
            assert_eq!(
                node["inputs"][input],
                serde_json::json!([target]),
                "flake.lock: input `{name}` must have its `{input}` follow `{target}` as flake.nix says \
                 (a list path in the node's inputs)"
            );
        }
        // Every input of a locked input that is not followed is a node of its own.
        for (input, to) in node["inputs"].as_object().into_iter().flatten() {
            if let Some(path) = to.as_array() {
                assert!(
                    follows.contains_key(input),
                    "flake.lock: `{name}` follows {path:?} for `{input}`, which flake.nix does not say"
                );
            } else {
                let to = to.as_str().unwrap();
                assert!(
                    nodes.contains_key(to),
                    "flake.lock: `{name}` refers to a missing node `{to}`"
                );
            }
        }
    }
}

#[test]
fn flake_toolchain_is_rust_toolchain_toml() {
    let toolchain: toml_edit::DocumentMut = read("rust-toolchain.toml")
        .parse()
        .expect("rust-toolchain.toml is not valid TOML");
    let channel = toolchain["toolchain"]["channel"]
        .as_str()
        .expect("rust-toolchain.toml: no toolchain.channel");
    assert!(
        channel.split('.').count() == 3 && channel.split('.').all(|n| n.parse::<u32>().is_ok()),
        "rust-toolchain.toml: toolchain.channel `{channel}` must be an exact version (like 1.95.0), \
         or rustup and nix pick whatever is newest"
    );

    let flake = read("flake.nix");
    let code: String = flake
        .lines()
        .map(|line| line.split('#').next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        code.contains("rust-bin.fromRustupToolchainFile ./rust-toolchain.toml"),
        "flake.nix must take its Rust toolchain from rust-toolchain.toml \
         (pkgs.rust-bin.fromRustupToolchainFile ./rust-toolchain.toml) so the two cannot drift"
    );
    for pinned in [
        "rust-bin.stable.",
        "rust-bin.beta.",
        "rust-bin.nightly.",
        "rustChannelOf",
    ] {
        assert!(
            !code.contains(pinned),
            "flake.nix names a toolchain itself (`{pinned}`); use rust-toolchain.toml's, \
             through fromRustupToolchainFile"
        );
    }
    // A Rust version written anywhere in the flake must be the file's.
    for word in code.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
        let parts: Vec<_> = word.split('.').collect();
        if parts.len() == 3 && parts[0] == "1" && parts.iter().all(|p| p.parse::<u32>().is_ok()) {
            assert_eq!(
                word, channel,
                "flake.nix mentions Rust {word}, rust-toolchain.toml pins {channel}"
            );
        }
    }
}

/// The README's "Nix" section lists each pinned input in a table row
/// ``| `name` | `rev` | ...``.
#[test]
fn readme_documents_the_locked_inputs() {
    let readme = read("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Nix\n"))
        .expect("README.md has no `## Nix` section");
    let documented: BTreeMap<String, String> = section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<_> = line
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            (cells[1].to_owned(), cells[2].to_owned())
        })
        .collect();

    let lock = lock();
    let locked: BTreeMap<String, String> = root_inputs(&lock)
        .into_iter()
        .map(|(name, node)| {
            let rev = lock["nodes"][&node]["locked"]["rev"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            (name, rev)
        })
        .collect();
    assert_eq!(
        documented, locked,
        "README.md's Nix table (input, rev) differs from flake.lock's root inputs; \
         update the table when the lock changes"
    );
    assert!(
        section.contains("rust-toolchain.toml"),
        "README.md's Nix section must say the toolchain comes from rust-toolchain.toml"
    );
}
