//! Who may depend on whom (ARCHITECTURE.md, "Code map"), read from the
//! workspace's resolved graph (`cargo metadata`) and enforced:
//!
//! - `backworks-plugin-sdk`'s normal and build dependencies, followed all the
//!   way down, hold no workspace crate but `backworks-abi`, and none of the
//!   host's or tools' heavy crates ([`SDK_FORBIDDEN`]): plugins link it;
//! - `backworks-abi` depends on no workspace crate;
//! - `backworks-artifact` on `backworks-abi` only, `backworks-registry` on
//!   `backworks-abi` and `backworks-artifact` only (among workspace crates);
//! - nothing depends (normal or build) on `backworks-host` or
//!   `cargo-backworks`;
//! - `backworks-test-support` is only ever a dev-dependency.
//!
//! The graph is the workspace's, whose features are unified across members:
//! it can only show the SDK more dependencies than a plugin build sees, never
//! fewer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cargo_metadata::{DependencyKind, MetadataCommand};

/// External crates no plugin may pull in through the SDK.
const SDK_FORBIDDEN: [&str; 8] = [
    "object",
    "minisign",
    "reqwest",
    "axum",
    "hyper",
    "libloading",
    "semver",
    "tempfile",
];

/// Workspace crates each library may depend on (normal and build edges).
const ALLOWED: [(&str, &[&str]); 3] = [
    ("backworks-abi", &[]),
    ("backworks-artifact", &["backworks-abi"]),
    (
        "backworks-registry",
        &["backworks-abi", "backworks-artifact"],
    ),
];

/// Crates nothing may depend on (normal or build).
const TOPS: [&str; 2] = ["backworks-host", "cargo-backworks"];

const SDK: &str = "backworks-plugin-sdk";
const SDK_WORKSPACE_DEPS: [&str; 1] = ["backworks-abi"];
const TEST_SUPPORT: &str = "backworks-test-support";

/// One edge of the graph: `from` depends on `to` as `kind`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Normal,
    Build,
    Dev,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Build => "build",
            Self::Dev => "dev",
        }
    }
}

/// The package graph by name: the workspace's members, and every edge.
#[derive(Debug, Default)]
struct Graph {
    members: BTreeSet<String>,
    edges: BTreeSet<Edge>,
}

impl Graph {
    /// The workspace's resolved graph, from `cargo metadata`.
    fn of_workspace() -> Self {
        let manifest = backworks_test_support::workspace().join("Cargo.toml");
        let metadata = MetadataCommand::new()
            .manifest_path(&manifest)
            .exec()
            .unwrap_or_else(|e| panic!("cargo metadata of {}: {e}", manifest.display()));
        let name = |id: &cargo_metadata::PackageId| metadata[id].name.to_string();
        let mut graph = Graph {
            members: metadata.workspace_members.iter().map(name).collect(),
            ..Graph::default()
        };
        let resolve = metadata.resolve.as_ref().expect("cargo metadata resolves");
        for node in &resolve.nodes {
            for dep in &node.deps {
                for info in &dep.dep_kinds {
                    let kind = match info.kind {
                        DependencyKind::Normal => Kind::Normal,
                        DependencyKind::Build => Kind::Build,
                        _ => Kind::Dev,
                    };
                    graph.edges.insert(Edge {
                        from: name(&node.id),
                        to: name(&dep.pkg),
                        kind,
                    });
                }
            }
        }
        graph
    }

    /// Edges from `from` that are not dev-dependencies.
    fn non_dev<'a>(&'a self, from: &'a str) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges
            .iter()
            .filter(move |e| e.from == from && e.kind != Kind::Dev)
    }

    /// Every crate `root` reaches through normal and build edges, each with
    /// the path that reaches it (`a -> b -> c`).
    fn closure(&self, root: &str) -> BTreeMap<String, String> {
        let mut paths = BTreeMap::new();
        let mut queue = VecDeque::from([(root.to_owned(), root.to_owned())]);
        while let Some((name, path)) = queue.pop_front() {
            for edge in self.non_dev(&name) {
                if !paths.contains_key(&edge.to) && edge.to != root {
                    let next = format!("{path} -> {} ({})", edge.to, edge.kind.name());
                    paths.insert(edge.to.clone(), next.clone());
                    queue.push_back((edge.to.clone(), next));
                }
            }
        }
        paths
    }

    /// Every broken rule, one line each, naming the offending edge.
    fn violations(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (name, path) in self.closure(SDK) {
            if self.members.contains(&name) && !SDK_WORKSPACE_DEPS.contains(&name.as_str()) {
                found.push(format!(
                    "{path}: plugins link {SDK}, whose normal dependencies may hold no workspace crate but {SDK_WORKSPACE_DEPS:?}"
                ));
            }
            if SDK_FORBIDDEN.contains(&name.as_str()) {
                found.push(format!(
                    "{path}: plugins link {SDK}, which must not pull in {name} (host and tool code belongs in backworks-artifact or backworks-registry)"
                ));
            }
        }
        for (crate_name, allowed) in ALLOWED {
            for edge in self.non_dev(crate_name) {
                if self.members.contains(&edge.to) && !allowed.contains(&edge.to.as_str()) {
                    found.push(format!(
                        "{crate_name} -> {} ({}): {crate_name} may depend on {allowed:?} only among the workspace's crates",
                        edge.to,
                        edge.kind.name()
                    ));
                }
            }
        }
        for edge in &self.edges {
            if TOPS.contains(&edge.to.as_str()) && edge.kind != Kind::Dev {
                found.push(format!(
                    "{} -> {} ({}): nothing may depend on {}: it is a top of the graph",
                    edge.from,
                    edge.to,
                    edge.kind.name(),
                    edge.to
                ));
            }
            if edge.to == TEST_SUPPORT && edge.kind != Kind::Dev {
                found.push(format!(
                    "{} -> {TEST_SUPPORT} ({}): {TEST_SUPPORT} may only be a dev-dependency",
                    edge.from,
                    edge.kind.name()
                ));
            }
        }
        found
    }
}

#[test]
fn the_workspace_keeps_its_dependency_rules() {
    let graph = Graph::of_workspace();
    for member in [SDK, TEST_SUPPORT]
        .into_iter()
        .chain(TOPS)
        .chain(ALLOWED.map(|(n, _)| n))
    {
        assert!(
            graph.members.contains(member),
            "{member} is not a workspace member any more: update this test and ARCHITECTURE.md"
        );
    }
    let violations = graph.violations();
    assert!(
        violations.is_empty(),
        "the dependency rules of ARCHITECTURE.md are broken:\n  {}",
        violations.join("\n  ")
    );
}

/// Edges of a test graph: `from`, `to`, kind.
type Edges<'a> = &'a [(&'a str, &'a str, Kind)];

/// A graph of the workspace's members with `edges`.
fn graph(edges: Edges<'_>) -> Graph {
    Graph {
        members: [SDK, TEST_SUPPORT]
            .into_iter()
            .chain(TOPS)
            .chain(ALLOWED.map(|(n, _)| n))
            .map(str::to_owned)
            .collect(),
        edges: edges
            .iter()
            .map(|&(from, to, kind)| Edge {
                from: from.to_owned(),
                to: to.to_owned(),
                kind,
            })
            .collect(),
    }
}

#[test]
fn each_rule_names_the_edge_that_breaks_it() {
    use Kind::{Build, Dev, Normal};
    let allowed = graph(&[
        (SDK, "backworks-abi", Normal),
        (SDK, "tokio", Normal),
        (SDK, "tempfile", Dev),
        (SDK, TEST_SUPPORT, Dev),
        ("backworks-artifact", "backworks-abi", Normal),
        ("backworks-registry", "backworks-artifact", Normal),
        ("backworks-host", "backworks-registry", Normal),
        ("backworks-host", "cargo-backworks", Dev),
    ]);
    assert_eq!(allowed.violations(), Vec::<String>::new());

    let cases: [(Edges<'_>, &str); 7] = [
        (
            &[(SDK, "tokio", Normal), ("tokio", "object", Normal)],
            "backworks-plugin-sdk -> tokio (normal) -> object (normal): plugins link",
        ),
        (
            &[(SDK, "backworks-artifact", Normal)],
            "backworks-plugin-sdk -> backworks-artifact (normal): plugins link",
        ),
        (
            &[("backworks-abi", SDK, Build)],
            "backworks-abi -> backworks-plugin-sdk (build): backworks-abi may depend on []",
        ),
        (
            &[("backworks-artifact", "backworks-registry", Normal)],
            "backworks-artifact -> backworks-registry (normal)",
        ),
        (
            &[("backworks-registry", SDK, Normal)],
            "backworks-registry -> backworks-plugin-sdk (normal)",
        ),
        (
            &[("cargo-backworks", "backworks-host", Normal)],
            "cargo-backworks -> backworks-host (normal): nothing may depend on backworks-host",
        ),
        (
            &[("backworks-host", TEST_SUPPORT, Normal)],
            "backworks-host -> backworks-test-support (normal): backworks-test-support may only be a dev-dependency",
        ),
    ];
    for (edges, expected) in cases {
        let violations = graph(edges).violations();
        assert!(
            violations.iter().any(|v| v.starts_with(expected)),
            "expected a violation starting {expected:?}, got {violations:#?}"
        );
    }
}
