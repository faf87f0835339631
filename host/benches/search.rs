//! Search latency of `backworks marketplace serve` over an index of 10 000
//! plugins: the real binary on 127.0.0.1, 2 000 queries of varied kinds
//! (exact name, common and rare words, two terms, prefixes, no hit, empty
//! query, deep pages, 100 hits a page) sent one after the other over one
//! keep-alive connection, timed at the client. Goal: p99 under 10 ms.
//!
//! The index is signed with `registry::sign_index` from generated names,
//! descriptions and keywords (release files are not needed for search).
//!
//! Run: `cargo bench -p backworks-host --bench search`.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use backworks_registry::{self as registry, Index, IndexEntry, ReleaseRef};

use backworks_test_support as support;

const PLUGINS: usize = 10_000;
const QUERIES: usize = 2_000;
const WARM_UP: usize = 100;

/// A small deterministic generator (xorshift64*), so every run searches the
/// same index.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[(self.next() % words.len() as u64) as usize]
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const DOMAINS: &[&str] = &[
    "auth",
    "jwt",
    "oauth",
    "session",
    "cache",
    "redis",
    "memcache",
    "rate-limit",
    "quota",
    "geo",
    "weather",
    "maps",
    "image",
    "thumbnail",
    "pdf",
    "csv",
    "excel",
    "mail",
    "smtp",
    "sms",
    "push",
    "payments",
    "stripe",
    "invoice",
    "search",
    "elastic",
    "log",
    "audit",
    "metrics",
    "trace",
    "queue",
    "kafka",
    "s3",
    "blob",
    "webhook",
    "graphql",
    "grpc",
    "cors",
    "csrf",
    "compress",
    "i18n",
    "currency",
    "tax",
    "captcha",
    "feature-flags",
    "ab-test",
    "cdn",
    "dns",
    "ldap",
    "saml",
];
const ROLES: &[&str] = &[
    "client",
    "proxy",
    "filter",
    "adapter",
    "sync",
    "guard",
    "bridge",
    "cache",
    "router",
    "exporter",
    "validator",
    "transformer",
    "gateway",
    "store",
    "hooks",
    "tools",
];
const WORDS: &[&str] = &[
    "fast",
    "secure",
    "async",
    "streaming",
    "batched",
    "retrying",
    "pluggable",
    "declarative",
    "lightweight",
    "configurable",
    "requests",
    "responses",
    "headers",
    "tokens",
    "endpoints",
    "backend",
    "api",
    "integration",
    "middleware",
    "service",
    "cluster",
    "region",
    "tenant",
    "users",
    "accounts",
    "orders",
    "events",
    "records",
    "documents",
    "files",
    "uploads",
    "downloads",
    "signatures",
    "keys",
    "certificates",
    "policies",
    "limits",
    "errors",
    "health",
    "latency",
    "throughput",
    "storage",
    "database",
    "postgres",
    "mysql",
    "sqlite",
    "mongodb",
    "json",
    "xml",
    "yaml",
    "protobuf",
    "websocket",
    "http",
    "tls",
    "cloud",
    "aws",
    "azure",
    "gcp",
    "forecast",
    "temperature",
    "rain",
    "currency",
    "exchange",
    "rates",
    "billing",
    "analytics",
    "dashboard",
    "alerts",
    "notifications",
    "scheduler",
    "cron",
    "workflow",
    "pipeline",
];

/// An index of [`PLUGINS`] plugins with generated names, descriptions,
/// keywords and one to three versions each.
fn generated_index() -> Index {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut plugins = BTreeMap::new();
    let mut serial = 0usize;
    while plugins.len() < PLUGINS {
        serial += 1;
        let domain = rng.pick(DOMAINS);
        let role = rng.pick(ROLES);
        let name = if rng.below(3) == 0 {
            format!("{domain}-{role}")
        } else {
            format!("{domain}-{role}-{serial}")
        };
        if plugins.contains_key(&name) {
            continue;
        }
        let length = 6 + rng.below(10);
        let mut description = format!("{} {role} for", capitalise(domain));
        for _ in 0..length {
            description.push(' ');
            description.push_str(rng.pick(WORDS));
        }
        let keywords: Vec<String> = (0..1 + rng.below(4))
            .map(|i| {
                if i == 0 {
                    domain.to_owned()
                } else {
                    rng.pick(WORDS).to_owned()
                }
            })
            .collect();
        let versions = (0..1 + rng.below(3))
            .map(|minor| {
                let version = format!("{}.{minor}.{}", rng.below(3), rng.below(10));
                let path = format!("plugins/{name}/{version}/release.json");
                let reference = ReleaseRef {
                    sha256: registry::sha256_hex(path.as_bytes()),
                    path,
                    size: 900 + rng.below(400),
                    abi: Some(1),
                    capabilities: None,
                    floors: Default::default(),
                    deps: Default::default(),
                };
                (version, reference)
            })
            .collect();
        plugins.insert(
            name,
            IndexEntry {
                description,
                keywords,
                versions,
            },
        );
    }
    let now = registry::now();
    Index {
        format: registry::FORMAT,
        serial: 7,
        issued: now,
        expires: now + registry::DEFAULT_INDEX_LIFETIME_SECS,
        plugins,
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// The query strings sent, in turn.
fn queries() -> Vec<String> {
    [
        "q=weather",
        "q=auth-jwt",
        "q=cache",
        "q=postgres",
        "q=secure+tokens",
        "q=kafka-exporter",
        "q=rate",
        "q=nothing-matches-this",
        "q=",
        "q=api&page=50",
        "q=json&per_page=100",
        "q=STREAMING+Json",
        "q=s3+upload",
        "q=ldap-guard-1234",
        "q=forecast+rain+temperature",
        "q=http&page=3&per_page=50",
    ]
    .iter()
    .map(|q| (*q).to_owned())
    .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let key_file = dir.path().join("registry.key");
    std::fs::write(&key_file, pair.sk.to_box(None).unwrap().into_string()).unwrap();
    let index = generated_index();
    let envelope = registry::sign_index(&index, &pair.sk).unwrap();
    std::fs::write(tree.join(registry::INDEX_PATH), &envelope).unwrap();
    println!(
        "index: {} plugins, {} versions, index.json {:.1} MB",
        index.plugins.len(),
        index
            .plugins
            .values()
            .map(|e| e.versions.len())
            .sum::<usize>(),
        envelope.len() as f64 / 1e6
    );

    let mut command = support::harness::backworks();
    command
        .env("RUST_LOG", "warn")
        .env_remove("BACKWORKS_REGISTRY_TOKEN")
        .args(["marketplace", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&tree)
        .arg("--key")
        .arg(&key_file);
    let server = support::harness::start_command(command, "marketplace listening on ");
    println!(
        "server started in {:.0} ms",
        server.started_in.as_secs_f64() * 1e3
    );

    // One connection, kept alive: requests one after the other.
    let client = support::harness::client_builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let queries = queries();
    let mut checked = vec![false; queries.len()];
    let mut latencies = Vec::with_capacity(QUERIES);
    let started = Instant::now();
    for i in 0..WARM_UP + QUERIES {
        let which = i % queries.len();
        let url = format!("{}/api/v1/search?{}", server.base, queries[which]);
        let sent = Instant::now();
        let response = client.get(&url).send().unwrap();
        let status = response.status();
        let body = response.bytes().unwrap();
        let elapsed = sent.elapsed();
        assert!(status.is_success(), "{url}: {status}");
        if !checked[which] {
            // The first answer to each query is what the library computes.
            let page: registry::SearchPage = serde_json::from_slice(&body).unwrap();
            let expected = registry::search(&index, &page.query, page.page, page.per_page);
            assert_eq!(page, expected, "{url}");
            println!(
                "  {:<40} {:>5} hits, {:>3} on the page",
                queries[which],
                page.total,
                page.hits.len()
            );
            checked[which] = true;
        }
        if i >= WARM_UP {
            latencies.push(elapsed);
        }
    }
    let measured = started.elapsed();
    latencies.sort();
    let total: Duration = latencies.iter().sum();
    println!(
        "{QUERIES} searches over one keep-alive connection on 127.0.0.1 (latency at the client, ms):"
    );
    println!(
        "  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        latencies.last().unwrap().as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3 / latencies.len() as f64
    );
    println!(
        "  {:.0} queries/s sequential (warm-up included: {:.0} ms in all)",
        (WARM_UP + QUERIES) as f64 / measured.as_secs_f64(),
        measured.as_secs_f64() * 1e3
    );
    println!(
        "  goal: p99 under 10 ms: {}",
        if percentile(&latencies, 99.0) < 10.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
