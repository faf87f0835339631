//! Unit tests of the registry format: index signatures, freshness, release
//! checks, version choice and search. Publishing real plugin libraries is
//! covered end to end by the host's and cargo-backworks' tests.

use super::*;
use crate::storage::{LOCK_PATH, STAGING_PREFIX};

fn keys() -> (PublicKey, SecretKey) {
    let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    (pair.pk, pair.sk)
}

fn entry(description: &str, keywords: &[&str], versions: &[&str]) -> IndexEntry {
    IndexEntry {
        description: description.to_owned(),
        keywords: keywords.iter().map(|k| (*k).to_owned()).collect(),
        versions: versions
            .iter()
            .map(|v| {
                (
                    (*v).to_owned(),
                    ReleaseRef {
                        path: format!("plugins/x/{v}/release.json"),
                        sha256: "00".repeat(32),
                        size: 1,
                        abi: None,
                        capabilities: None,
                        floors: Default::default(),
                        deps: Default::default(),
                    },
                )
            })
            .collect(),
    }
}

fn index(serial: u64, expires: u64) -> Index {
    let mut index = Index::empty();
    index.serial = serial;
    index.issued = 1_000;
    index.expires = expires;
    index.plugins.insert(
        "weather".into(),
        entry(
            "Weather API integration",
            &["weather", "api"],
            &["1.0.0", "1.10.0", "1.9.0"],
        ),
    );
    index.plugins.insert(
        "weather-alerts".into(),
        entry("Storm warnings", &["weather"], &["0.1.0"]),
    );
    index.plugins.insert(
        "stripe".into(),
        entry(
            "Payments; reads the weather? no",
            &["payments"],
            &["2.0.0-beta.1", "1.2.0"],
        ),
    );
    index
}

const FRESH: Freshness = Freshness {
    last_serial: None,
    now: 2_000,
};

#[test]
fn a_signed_index_verifies_with_its_key_and_round_trips() {
    let (pk, sk) = keys();
    let original = index(7, 5_000);
    let bytes = sign_index(&original, &sk).unwrap();
    let verified = verify_index(&bytes, &pk, FRESH, "test").unwrap();
    assert_eq!(verified, original);
    // The trusted comment states serial, expiry and hash, for minisign users.
    let envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
    assert!(
        envelope
            .signature
            .contains("trusted comment: backworks-index:1 serial:7 expires:5000 sha256:"),
        "{}",
        envelope.signature
    );
}

#[test]
fn an_index_signed_by_another_key_is_refused_with_both_key_ids() {
    let (pk, _) = keys();
    let (_, other) = keys();
    let bytes = sign_index(&index(1, 5_000), &other).unwrap();
    let error = verify_index(&bytes, &pk, FRESH, "http://mirror/").unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, RegistryError::IndexSignature { .. }),
        "{message}"
    );
    assert!(
        message.contains(&KeyId::of_public_key(&pk).to_string()),
        "{message}"
    );
    assert!(
        message.contains(&KeyId::of_secret_key(&other).to_string()),
        "{message}"
    );
    assert!(message.contains("http://mirror/"), "{message}");
}

#[test]
fn an_altered_index_is_refused() {
    let (pk, sk) = keys();
    let bytes = sign_index(&index(1, 5_000), &sk).unwrap();
    let mut envelope: Envelope = serde_json::from_slice(&bytes).unwrap();
    envelope.index = envelope.index.replace("Storm warnings", "Storm warnings!");
    let altered = serde_json::to_vec(&envelope).unwrap();
    let error = verify_index(&altered, &pk, FRESH, "test").unwrap_err();
    assert!(
        matches!(error, RegistryError::IndexSignature { .. }),
        "{error}"
    );
}

#[test]
fn a_signature_whose_comment_does_not_describe_the_index_is_refused() {
    let (pk, sk) = keys();
    let index = index(9, 5_000);
    let text = serde_json::to_string_pretty(&index).unwrap();
    // Validly signed, but the comment claims a higher serial than the index.
    let comment = format!(
        "{INDEX_COMMENT_TAG}:{FORMAT} serial:10 expires:5000 sha256:{}",
        sha256_hex(text.as_bytes())
    );
    let signature = minisign::sign(
        Some(&pk),
        &sk,
        Cursor::new(text.as_bytes()),
        Some(&comment),
        None,
    )
    .unwrap();
    let envelope = Envelope {
        format: FORMAT,
        signature: signature.into_string(),
        index: text,
    };
    let error =
        verify_index(&serde_json::to_vec(&envelope).unwrap(), &pk, FRESH, "test").unwrap_err();
    assert!(
        error.to_string().contains("does not describe the index"),
        "{error}"
    );
}

#[test]
fn an_older_serial_is_a_rollback_and_the_same_serial_is_not() {
    let (pk, sk) = keys();
    let bytes = sign_index(&index(4, 5_000), &sk).unwrap();
    let seen = |last| Freshness {
        last_serial: Some(last),
        now: 2_000,
    };
    assert!(verify_index(&bytes, &pk, seen(4), "test").is_ok());
    assert!(verify_index(&bytes, &pk, seen(3), "test").is_ok());
    let error = verify_index(&bytes, &pk, seen(5), "test").unwrap_err();
    assert!(
        matches!(
            error,
            RegistryError::Rollback {
                serial: 4,
                last_seen: 5,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("rollback"), "{error}");
}

#[test]
fn an_expired_index_is_refused_as_frozen() {
    let (pk, sk) = keys();
    let bytes = sign_index(&index(4, 1_999), &sk).unwrap();
    let error = verify_index(&bytes, &pk, FRESH, "test").unwrap_err();
    assert!(
        matches!(
            error,
            RegistryError::Expired {
                expires: 1_999,
                now: 2_000,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("frozen"), "{error}");
}

#[test]
fn garbage_is_a_malformed_index_never_a_panic() {
    let (pk, _) = keys();
    for bytes in [
        &b""[..],
        b"{}",
        b"<html>not found</html>",
        b"{\"format\":1,\"signature\":\"x\",\"index\":\"{}\"}",
        b"{\"format\":2,\"signature\":\"\",\"index\":\"\"}",
    ] {
        let error = verify_index(bytes, &pk, FRESH, "test").unwrap_err();
        assert!(
            matches!(
                error,
                RegistryError::MalformedIndex { .. } | RegistryError::IndexSignature { .. }
            ),
            "{error}"
        );
    }
}

#[test]
fn a_release_must_match_the_index_in_size_hash_and_identity() {
    let release = Release {
        format: FORMAT,
        name: "weather".into(),
        version: "1.0.0".into(),
        description: String::new(),
        keywords: Vec::new(),
        abi: 1,
        publisher: "0000000000000001".into(),
        published: 1,
        capabilities: None,
        targets: BTreeMap::new(),
    };
    let bytes = serde_json::to_vec(&release).unwrap();
    let reference = ReleaseRef {
        path: "plugins/weather/1.0.0/release.json".into(),
        sha256: sha256_hex(&bytes),
        size: bytes.len() as u64,
        abi: None,
        capabilities: None,
        floors: Default::default(),
        deps: Default::default(),
    };
    assert_eq!(
        verify_release(&bytes, &reference, "weather", "1.0.0").unwrap(),
        release
    );
    let wrong_size = ReleaseRef {
        size: reference.size + 1,
        ..reference.clone()
    };
    assert!(
        verify_release(&bytes, &wrong_size, "weather", "1.0.0")
            .unwrap_err()
            .to_string()
            .contains("bytes, the index says")
    );
    let mut altered = bytes.clone();
    altered[0] = b' ';
    assert!(
        verify_release(&altered, &reference, "weather", "1.0.0")
            .unwrap_err()
            .to_string()
            .contains("sha256")
    );
    assert!(
        verify_release(&bytes, &reference, "weather", "1.0.1")
            .unwrap_err()
            .to_string()
            .contains("not weather 1.0.1")
    );
}

#[test]
fn versions_are_ordered_by_semver_and_requirements_pick_the_newest() {
    let index = index(1, 5_000);
    let versions: Vec<String> = index
        .versions("weather")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(versions, ["1.10.0", "1.9.0", "1.0.0"]);
    let req = |text| semver::VersionReq::parse(text).unwrap();
    assert_eq!(
        index
            .newest_matching("weather", &req("^1.0"))
            .unwrap()
            .to_string(),
        "1.10.0"
    );
    assert_eq!(
        index
            .newest_matching("weather", &req("~1.9"))
            .unwrap()
            .to_string(),
        "1.9.0"
    );
    assert_eq!(index.newest_matching("weather", &req("^2")), None);
    assert_eq!(index.newest_matching("missing", &req("*")), None);
    // A pre-release only when asked for.
    assert_eq!(
        index
            .newest_matching("stripe", &req("*"))
            .unwrap()
            .to_string(),
        "1.2.0"
    );
    assert_eq!(
        index
            .newest_matching("stripe", &req(">=2.0.0-beta"))
            .unwrap()
            .to_string(),
        "2.0.0-beta.1"
    );
}

#[test]
fn search_ranks_name_before_keyword_before_description() {
    let index = index(1, 5_000);
    let page = search(&index, "weather", 1, 20);
    let names: Vec<&str> = page.hits.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["weather", "weather-alerts", "stripe"]);
    assert_eq!(page.total, 3);
    assert_eq!(page.hits[0].version, "1.10.0");
    // Every term must match; case does not matter.
    let page = search(&index, "WEATHER storm", 1, 20);
    let names: Vec<&str> = page.hits.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["weather-alerts"]);
    assert_eq!(search(&index, "nothing-like-it", 1, 20).total, 0);
}

#[test]
fn search_pages_and_lists_everything_for_an_empty_query() {
    let index = index(1, 5_000);
    let all = search(&index, "", 1, 20);
    assert_eq!(all.total, 3);
    let names: Vec<&str> = all.hits.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["stripe", "weather", "weather-alerts"]);
    let second = search(&index, "", 2, 2);
    assert_eq!((second.total, second.page, second.per_page), (3, 2, 2));
    assert_eq!(second.hits.len(), 1);
    assert_eq!(second.hits[0].name, "weather-alerts");
    // Out-of-range arguments are clamped, never a panic.
    assert_eq!(search(&index, "", 0, 0).per_page, 1);
    assert_eq!(search(&index, "", usize::MAX, usize::MAX).hits.len(), 0);
}

#[test]
fn plugin_names_are_safe_path_and_url_segments() {
    for good in ["weather", "weather-plugin", "a1_b", &"x".repeat(64)] {
        assert!(is_valid_name(good), "{good}");
    }
    for bad in [
        "",
        "Weather",
        "1weather",
        "-x",
        "a/b",
        "..",
        "a b",
        "é",
        &"x".repeat(65),
    ] {
        assert!(!is_valid_name(bad), "{bad}");
    }
}

#[test]
fn a_tree_without_an_index_reads_as_empty_and_resign_starts_at_serial_one() {
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = keys();
    let tree = Tree::open(&dir.path().join("registry"), sk, 60).unwrap();
    assert_eq!(tree.index().unwrap(), Index::empty());
    let first = tree.resign().unwrap();
    assert_eq!(first.serial, 1);
    assert!(first.expires >= first.issued + 60);
    let second = tree.resign().unwrap();
    assert_eq!(second.serial, 2);
    let bytes = std::fs::read(dir.path().join("registry").join(INDEX_PATH)).unwrap();
    let verified = verify_index(
        &bytes,
        &pk,
        Freshness {
            last_serial: Some(1),
            now: now(),
        },
        "tree",
    )
    .unwrap();
    assert_eq!(verified, second);
    // No temporary file is left beside the index.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("registry"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| n == INDEX_PATH || n == LOCK_PATH),
        "{names:?}"
    );
}

#[test]
fn publishing_removes_staging_directories_left_by_a_killed_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (_, sk) = keys();
    let root = dir.path().join("registry");
    let tree = Tree::open(&root, sk, 60).unwrap();
    let left = root.join(".staging-killed/linux");
    std::fs::create_dir_all(&left).unwrap();
    std::fs::write(left.join("half.so"), b"half").unwrap();
    // Validation is tested above and end to end: this release's bytes need
    // not be a plugin.
    let dir_path = "plugins/demo/1.0.0/x86_64-unknown-linux-gnu";
    tree.publish(demo_upload("1.0.0", b"library")).unwrap();
    assert!(!root.join(".staging-killed").exists());
    assert_eq!(
        std::fs::read(root.join(dir_path).join("demo.so")).unwrap(),
        b"library"
    );
    let names: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(STAGING_PREFIX)),
        "{names:?}"
    );
}

#[test]
fn an_upload_without_artifacts_or_with_a_bad_file_name_is_refused() {
    let (pk, _) = keys();
    assert!(matches!(
        validate_upload(Upload::default(), std::slice::from_ref(&pk)),
        Err(RegistryError::NoArtifacts)
    ));
    for name in ["../x.so", ".hidden.so", "a/b.so", ""] {
        let upload = Upload {
            artifacts: vec![UploadArtifact {
                file_name: name.into(),
                bytes: vec![0; 4],
                signature: String::new(),
            }],
            ..Upload::default()
        };
        assert!(
            matches!(
                validate_upload(upload, std::slice::from_ref(&pk)),
                Err(RegistryError::InvalidFileName { .. })
            ),
            "{name}"
        );
    }
    let upload = Upload {
        artifacts: vec![UploadArtifact {
            file_name: "x-1.0.0-x86_64-unknown-linux-gnu.so".into(),
            bytes: b"not a library".to_vec(),
            signature: String::new(),
        }],
        ..Upload::default()
    };
    let error = validate_upload(upload, &[pk]).unwrap_err();
    assert!(
        matches!(error, RegistryError::InvalidArtifact { .. }),
        "{error}"
    );
}

#[test]
fn listings_keep_to_crates_io_keywords_and_a_summary_description() {
    let words = |list: &[&str]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert!(check_listing(None, &[]).is_ok());
    assert!(
        check_listing(
            Some("Weather forecasts.\n\tBy city."),
            &words(&[
                "weather",
                "api-client",
                "c++",
                "x_1",
                "a2345678901234567890"
            ])
        )
        .is_ok()
    );
    let refused = |description: Option<&str>, keywords: &[&str]| {
        check_listing(description, &words(keywords))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refused(None, &["a", "b", "c", "d", "e", "f"]),
        "`keywords` has 6 entries, at most 5 are allowed; keep the 5 that describe the plugin best"
    );
    for bad in [
        "",
        "-lead",
        "with space",
        "émoji",
        "a23456789012345678901",
        "a/b",
    ] {
        assert_eq!(
            refused(None, &[bad]),
            format!(
                "`keywords` entry {bad:?} is not a keyword: use 1 to 20 ASCII letters, digits, `-`, `_` or `+`, starting with a letter or digit"
            )
        );
    }
    assert_eq!(
        refused(None, &["api", "api"]),
        "`keywords` lists \"api\" twice; list each keyword once"
    );
    assert_eq!(
        refused(Some(&"é".repeat(1001)), &[]),
        "`description` is 1001 characters long, at most 1000 are allowed; keep it to a summary (the README is the place for more)"
    );
    assert!(check_listing(Some(&"é".repeat(1000)), &[]).is_ok());
    assert_eq!(
        refused(Some("bell\u{7}"), &[]),
        "`description` holds the control character '\\u{7}'; use plain text"
    );
    // The registry refuses such an upload before looking at its artifacts.
    let (pk, _) = keys();
    let upload = Upload {
        keywords: words(&["a", "b", "c", "d", "e", "f"]),
        artifacts: vec![UploadArtifact {
            file_name: "x-1.0.0-x86_64-unknown-linux-gnu.so".into(),
            bytes: b"not a library".to_vec(),
            signature: String::new(),
        }],
        ..Upload::default()
    };
    assert!(matches!(
        validate_upload(upload, &[pk]),
        Err(RegistryError::InvalidListing {
            field: "keywords",
            ..
        })
    ));
}

// Search ranking and paging over a larger sample.

/// An index of `(name, description, keywords, versions)`.
fn index_of(plugins: &[(&str, &str, &[&str], &[&str])]) -> Index {
    let mut index = Index::empty();
    for (name, description, keywords, versions) in plugins {
        let versions = versions
            .iter()
            .map(|v| {
                let reference = ReleaseRef {
                    path: format!("plugins/{name}/{v}/release.json"),
                    sha256: sha256_hex(v.as_bytes()),
                    size: 1,
                    abi: None,
                    capabilities: None,
                    floors: Default::default(),
                    deps: Default::default(),
                };
                ((*v).to_owned(), reference)
            })
            .collect();
        index.plugins.insert(
            (*name).to_owned(),
            IndexEntry {
                description: (*description).to_owned(),
                keywords: keywords.iter().map(|k| (*k).to_owned()).collect(),
                versions,
            },
        );
    }
    index
}

fn names(page: &SearchPage) -> Vec<(&str, u32)> {
    page.hits
        .iter()
        .map(|hit| (hit.name.as_str(), hit.score))
        .collect()
}

fn sample() -> Index {
    index_of(&[
        ("sky", "Sky colour by the weather", &[], &["0.1.0"]),
        ("weather-radar", "Rain radar", &["maps"], &["2.0.0"]),
        ("openweather", "OpenWeather API client", &[], &["1.0.0"]),
        ("forecast", "Forecasts", &["Weather"], &["1.0.0"]),
        ("climate", "Climate data", &["weathering"], &["1.0.0"]),
        ("weather", "Weather API integration", &[], &["1.0.0"]),
        ("auth-jwt", "JWT bearer tokens", &["auth"], &["3.1.4"]),
        ("zz-weather-b", "Second by name", &[], &["1.0.0"]),
        ("zz-weather-a", "First by name", &[], &["1.0.0"]),
    ])
}

#[test]
fn search_ranks_name_then_keywords_then_description() {
    let page = search(&sample(), "weather", 1, 20);
    assert_eq!(page.total, 8);
    assert_eq!(
        names(&page),
        [
            ("weather", 100),
            ("weather-radar", 60),
            ("openweather", 40),
            ("zz-weather-a", 40),
            ("zz-weather-b", 40),
            ("forecast", 30),
            ("climate", 20),
            ("sky", 10),
        ]
    );
    // Case does not matter, on either side.
    assert_eq!(search(&sample(), "WeAtHeR", 1, 20).hits, page.hits);
}

#[test]
fn every_term_must_match_and_scores_add_up() {
    let page = search(&sample(), "weather rain", 1, 20);
    assert_eq!(names(&page), [("weather-radar", 70)]);
    let page = search(&sample(), "  api   weather ", 1, 20);
    assert_eq!(names(&page), [("weather", 110), ("openweather", 50)]);
    assert_eq!(page.query, "  api   weather ");
    assert_eq!(search(&sample(), "weather nothing", 1, 20).total, 0);
}

#[test]
fn search_pages_and_clamps() {
    let all = search(&sample(), "weather", 1, 100);
    let second = search(&sample(), "weather", 2, 3);
    assert_eq!((second.total, second.page, second.per_page), (8, 2, 3));
    assert_eq!(second.hits, all.hits[3..6]);
    let last = search(&sample(), "weather", 3, 3);
    assert_eq!(last.hits, all.hits[6..]);
    let beyond = search(&sample(), "weather", 4, 3);
    assert_eq!((beyond.total, beyond.hits.len()), (8, 0));
    let clamped = search(&sample(), "weather", 0, 0);
    assert_eq!((clamped.page, clamped.per_page), (1, 1));
    assert_eq!(clamped.hits, all.hits[..1]);
    assert_eq!(search(&sample(), "", 1, 1000).per_page, 100);
    // A page number past usize's range of items does not overflow.
    assert!(
        search(&sample(), "weather", usize::MAX, 100)
            .hits
            .is_empty()
    );
}

#[test]
fn an_empty_query_lists_everything_by_name_with_the_newest_version() {
    let index = index_of(&[
        ("b", "B", &[], &["1.2.0", "1.10.0", "1.9.9", "not-semver"]),
        ("a", "A", &["x"], &["0.1.0"]),
    ]);
    let page = search(&index, "", 1, 20);
    assert_eq!(names(&page), [("a", 0), ("b", 0)]);
    assert_eq!(page.hits[1].version, "1.10.0");
    assert_eq!(page.hits[0].keywords, ["x"]);
    assert_eq!(page.hits[0].description, "A");
}

#[test]
fn coordinates_keep_to_their_grammar() {
    let target = "x86_64-unknown-linux-gnu";
    for (name, version) in [
        ("weather", "1.0.0"),
        ("weather-alerts", "0.1.0-beta.2"),
        ("a_1", "1.2.3+build.5"),
    ] {
        check_coordinates(name, version, target).unwrap();
    }
    for name in ["../weather", "Weather", "a/b", "", ".."] {
        let error = check_coordinates(name, "1.0.0", target).unwrap_err();
        assert!(
            matches!(error, RegistryError::InvalidName { .. }),
            "{error}"
        );
    }
    for version in [
        "../1.0.0",
        "1.0.0/..",
        "1.0",
        "v1.0.0",
        " 1.0.0",
        "1.0.0\n",
        "",
        &format!("1.0.0-{}", "a".repeat(MAX_VERSION_LEN)),
    ] {
        let error = check_coordinates("weather", version, target).unwrap_err();
        assert!(
            matches!(error, RegistryError::InvalidVersion { .. }),
            "{version:?}: {error}"
        );
    }
    for hostile in [
        "../../../../srv/victim",
        "../weather/1.0.0/x86_64-unknown-linux-gnu",
        "x86_64-unknown-linux-gnu/..",
        "..",
        "",
        "x86_64-unknown-linux-gnu\u{1b}[2K",
        "wasm32-unknown-unknown",
        "foo-bar-baz",
    ] {
        let error = check_coordinates("weather", "1.0.0", hostile).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, RegistryError::InvalidTarget { .. }),
            "{hostile:?}: {message}"
        );
        // The message names the field and the value as it is.
        assert!(
            message.contains(&format!("`target` {hostile:?}")),
            "{message}"
        );
    }
}

#[test]
fn join_component_refuses_anything_but_one_plain_component() {
    let dir = Path::new("/registry/.staging-x");
    assert_eq!(
        join_component(dir, "target", "x86_64-unknown-linux-gnu").unwrap(),
        dir.join("x86_64-unknown-linux-gnu")
    );
    for component in [
        "", ".", "..", "../x", "a/b", "a/", "/abs", "./a", "a\\b", "a\0b",
    ] {
        let error = join_component(dir, "target", component).unwrap_err();
        assert!(
            matches!(error, RegistryError::UnsafePath { .. }),
            "{component:?}: {error}"
        );
    }
}

#[test]
fn publish_refuses_a_hostile_target_even_past_validation() {
    // A `ValidatedUpload` can only come from `validate_upload`, which
    // refuses these; `Tree::publish` checks again and writes nothing.
    let (_, sk) = keys();
    let outside = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    let tree = Tree::open(&root, sk, DEFAULT_INDEX_LIFETIME_SECS).unwrap();
    let victim = outside.path().join("victim");
    let depth = root.components().count() + 1;
    let hostile = format!(
        "{}{}",
        "../".repeat(depth),
        victim.strip_prefix("/").unwrap().display()
    );
    for target in [
        hostile.as_str(),
        "../plugins/other/1.0.0/x86_64-unknown-linux-gnu",
    ] {
        let release = Release {
            format: FORMAT,
            name: "weather".into(),
            version: "1.0.0".into(),
            description: String::new(),
            keywords: Vec::new(),
            abi: 1,
            publisher: String::new(),
            published: 0,
            capabilities: None,
            targets: BTreeMap::new(),
        };
        let upload = ValidatedUpload {
            release,
            files: vec![(
                target.to_owned(),
                UploadArtifact {
                    file_name: "libweather.so".into(),
                    bytes: b"bytes".to_vec(),
                    signature: String::new(),
                },
            )],
        };
        let error = tree.publish(upload).unwrap_err();
        assert!(
            matches!(error, RegistryError::InvalidTarget { .. }),
            "{target}: {error}"
        );
    }
    assert!(!victim.exists());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(!root.join("plugins").exists());
    assert_eq!(tree.index().unwrap().serial, 0, "nothing was committed");
}

/// A validated upload of plugin `demo` at `version` for one target, whose
/// library holds `bytes` (not a real plugin: `Tree::publish` writes what
/// `validate_upload` passed, which is tested above and end to end).
fn demo_upload(version: &str, bytes: &[u8]) -> ValidatedUpload {
    let target = "x86_64-unknown-linux-gnu";
    let dir_path = format!("plugins/demo/{version}/{target}");
    ValidatedUpload {
        release: Release {
            format: FORMAT,
            name: String::from("demo"),
            version: version.to_owned(),
            description: String::from("a demo"),
            keywords: Vec::new(),
            abi: 1,
            publisher: String::from("CAB78193ADCAB890"),
            published: now(),
            capabilities: None,
            targets: BTreeMap::from([(
                target.to_owned(),
                Artifact {
                    path: format!("{dir_path}/demo.so"),
                    signature: format!("{dir_path}/demo.so.minisig"),
                    sha256: sha256_hex(bytes),
                    size: bytes.len() as u64,
                    floor: Default::default(),
                    deps: Default::default(),
                },
            )]),
        },
        files: vec![(
            target.to_owned(),
            UploadArtifact {
                file_name: String::from("demo.so"),
                bytes: bytes.to_vec(),
                signature: String::from("signature"),
            },
        )],
    }
}

#[test]
fn versions_that_differ_only_in_case_are_refused_and_the_first_stays_intact() {
    // `1.0.0-RC1` and `1.0.0-rc1` are two semver versions but one
    // directory on a case-insensitive file system (macOS, Windows): the
    // second would replace the first's files there ("stale" directory).
    let dir = tempfile::tempdir().unwrap();
    let (_, sk) = keys();
    let root = dir.path().join("registry");
    let tree = Tree::open(&root, sk, 60).unwrap();
    let first = root.join("plugins/demo/1.0.0-RC1/x86_64-unknown-linux-gnu/demo.so");
    for (published, other) in [
        ("1.0.0-RC1", "1.0.0-rc1"),
        ("1.0.0-RC1", "1.0.0-Rc1"),
        ("1.0.0-RC1", "1.0.0-RC1"),
    ] {
        if !first.exists() {
            tree.publish(demo_upload(published, b"first")).unwrap();
        }
        let serial = tree.index().unwrap().serial;
        let error = tree
            .publish(demo_upload(other, b"second"))
            .expect_err(other);
        if published == other {
            assert!(matches!(error, RegistryError::AlreadyPublished { .. }));
        } else {
            assert!(matches!(error, RegistryError::VersionCaseCollision { .. }));
        }
        let error = error.to_string();
        assert!(
            error.contains(published) && error.contains(other),
            "the message names both spellings: {error}"
        );
        if published != other {
            assert!(error.contains("differ only in letter case"), "{error}");
        }
        let index = tree.index().unwrap();
        assert_eq!(index.serial, serial, "nothing was committed");
        let listed: Vec<_> = index.plugins["demo"].versions.keys().collect();
        assert_eq!(listed, [published]);
        assert_eq!(std::fs::read(&first).unwrap(), b"first");
        let versions: Vec<_> = std::fs::read_dir(root.join("plugins/demo"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(versions, [published], "no second directory");
    }
    // Build metadata is compared the same way.
    tree.publish(demo_upload("2.0.0+Build.1", b"build"))
        .unwrap();
    let error = tree
        .publish(demo_upload("2.0.0+build.1", b"second"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("2.0.0+Build.1"), "{error}");
    // A version that differs in more than case is published beside it.
    tree.publish(demo_upload("1.0.0-rc2", b"rc2")).unwrap();
    assert_eq!(std::fs::read(&first).unwrap(), b"first");
}

#[test]
fn windows_reserved_and_unsafe_file_names_are_refused_with_the_reason() {
    for good in [
        "demo-1.0.0-x86_64-pc-windows-msvc.dll",
        "libweather.so",
        "console.dll",
        "nullify.so",
        "com10.dll",
        "lpt0.dll",
        "a.con",
        "x-con.dll",
    ] {
        check_file_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    let cases: &[(&str, &[&str])] = &[
        (
            "reserved device name",
            &[
                "con.dll",
                "CON.dll",
                "Con",
                "prn.so",
                "AUX.dylib",
                "nul.so",
                "NUL.so",
                "nul.tar.gz",
                "com1.dll",
                "COM9.so",
                "lpt1.dll",
                "Lpt9.dylib",
                "con .dll",
                "conin$.dll",
                "CONOUT$",
                "clock$.so",
                "COM\u{b9}.dll",
                "lpt\u{b3}.so",
            ],
        ),
        (
            "end in a dot or a space",
            &["demo.dll.", "demo.so ", "demo."],
        ),
        (
            "character",
            &[
                "a<b.so",
                "a>b.so",
                "a:b.so",
                "a\"b.so",
                "a|b.so",
                "a?b.so",
                "a*b.so",
                "a\\b.so",
                "a/b.so",
                "a\u{1}b.so",
                "a\u{7f}b.so",
                "a\tb.so",
            ],
        ),
    ];
    for (reason, names) in cases {
        for name in *names {
            let error = check_file_name(name).expect_err(name);
            assert!(matches!(error, RegistryError::InvalidFileName { .. }));
            let error = error.to_string();
            assert!(
                error.contains(reason) && error.contains(&format!("{name:?}")),
                "{name:?}: {error}"
            );
            assert!(error.contains("Windows"), "{name:?}: {error}");
        }
    }
}

#[test]
fn windows_reserved_device_names_are_not_plugin_names() {
    // A plugin's name is a directory of the tree and of every cache.
    for reserved in ["con", "prn", "aux", "nul", "com1", "com9", "lpt1", "lpt9"] {
        assert!(!is_valid_name(reserved), "{reserved}");
        let error = check_name(reserved).unwrap_err();
        assert!(matches!(error, RegistryError::ReservedName { .. }));
        let error = error.to_string();
        assert!(
            error.contains(reserved) && error.contains("reserved") && error.contains("Windows"),
            "{error}"
        );
    }
    for fine in [
        "console",
        "nul_",
        "com10",
        "com0",
        "lpt",
        "auxiliary",
        "con-x",
    ] {
        check_name(fine).unwrap_or_else(|e| panic!("{fine}: {e}"));
    }
}

// Forward compatibility (docs/registry.md, "Compatibility").

/// Signs `text` as an index envelope of format `envelope_format`, with the
/// trusted comment `verify_index` expects for `serial` and `expires`.
fn envelope_of(
    text: &str,
    envelope_format: u32,
    serial: u64,
    expires: u64,
    sk: &SecretKey,
) -> Vec<u8> {
    let comment = format!(
        "{INDEX_COMMENT_TAG}:{FORMAT} serial:{serial} expires:{expires} sha256:{}",
        sha256_hex(text.as_bytes())
    );
    let signature = minisign::sign(
        None,
        sk,
        Cursor::new(text.as_bytes()),
        Some(&comment),
        Some("test"),
    )
    .unwrap();
    serde_json::to_vec(&serde_json::json!({
        "format": envelope_format,
        "signature": signature.into_string(),
        "index": text,
        "mirrors": ["added by a newer registry"],
    }))
    .unwrap()
}

#[test]
fn an_index_with_fields_this_client_does_not_know_is_read() {
    let (pk, sk) = keys();
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "format": 1,
        "serial": 3,
        "issued": 1_000,
        "expires": 5_000,
        "homepage": "https://plugins.example",
        "plugins": {
            "weather": {
                "description": "Weather",
                "keywords": ["weather"],
                "downloads": 12,
                "versions": {
                    "1.0.0": {
                        "path": "plugins/weather/1.0.0/release.json",
                        "sha256": "00".repeat(32),
                        "size": 10,
                        "abi": 1,
                        "yanked": false,
                    },
                    "0.9.0": {
                        "path": "plugins/weather/0.9.0/release.json",
                        "sha256": "00".repeat(32),
                        "size": 10,
                    }
                }
            }
        }
    }))
    .unwrap();
    let index = verify_index(&envelope_of(&text, 1, 3, 5_000, &sk), &pk, FRESH, "test").unwrap();
    assert_eq!(index.serial, 3);
    let versions = &index.plugins["weather"].versions;
    assert_eq!(versions["1.0.0"].abi, Some(1));
    // An index written before `abi` was added: absent, not an error.
    assert_eq!(versions["0.9.0"].abi, None);
}

#[test]
fn an_index_without_format_is_format_1() {
    let (pk, sk) = keys();
    let text = r#"{"serial": 2, "issued": 1, "expires": 5000, "plugins": {}}"#;
    let mut envelope: serde_json::Value =
        serde_json::from_slice(&envelope_of(text, 1, 2, 5_000, &sk)).unwrap();
    envelope.as_object_mut().unwrap().remove("format");
    let bytes = serde_json::to_vec(&envelope).unwrap();
    let index = verify_index(&bytes, &pk, FRESH, "test").unwrap();
    assert_eq!((index.format, index.serial), (1, 2));
}

#[test]
fn a_newer_index_format_is_refused_naming_both_versions_and_the_source() {
    let (pk, sk) = keys();
    let expected = "https://r.example/index.json: registry index format 2 is newer than this backworks reads (1); upgrade backworks to use this registry";
    // The index says so (and holds what format 1 does not: `plugins` is
    // now a list).
    let text = r#"{"format": 2, "serial": 2, "issued": 1, "expires": 5000, "plugins": []}"#;
    let error = verify_index(
        &envelope_of(text, 1, 2, 5_000, &sk),
        &pk,
        FRESH,
        "https://r.example/index.json",
    )
    .unwrap_err();
    assert!(
        matches!(error, RegistryError::NewerFormat { found: 2, .. }),
        "{error:?}"
    );
    assert_eq!(error.to_string(), expected);
    // The envelope says so.
    let text = serde_json::to_string(&index(2, 5_000)).unwrap();
    let error = verify_index(
        &envelope_of(&text, 2, 2, 5_000, &sk),
        &pk,
        FRESH,
        "https://r.example/index.json",
    )
    .unwrap_err();
    assert_eq!(error.to_string(), expected);
    // An envelope of a newer format that has no `signature` at all: there
    // is nothing else to read, so the version is what is said.
    let error = verify_index(
        br#"{"format": 3, "signatures": []}"#,
        &pk,
        FRESH,
        "https://r.example/index.json",
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("registry index format 3 is newer than this backworks reads (1)"),
        "{error}"
    );
    // Signed by someone else, a "format 2" is not believed.
    let (_, other) = keys();
    let text = r#"{"format": 2, "serial": 2, "issued": 1, "expires": 5000, "plugins": []}"#;
    let error =
        verify_index(&envelope_of(text, 2, 2, 5_000, &other), &pk, FRESH, "test").unwrap_err();
    assert!(
        matches!(error, RegistryError::IndexSignature { .. }),
        "{error:?}"
    );
}

#[test]
fn a_release_with_unknown_fields_is_read_and_a_newer_one_refused() {
    let release = serde_json::json!({
        "format": 1,
        "name": "weather",
        "version": "1.0.0",
        "description": "",
        "abi": 1,
        "publisher": "0000000000000001",
        "published": 1,
        "license": "MIT",
        "targets": {
            "x86_64-unknown-linux-gnu": {
                "path": "p", "signature": "p.minisig", "sha256": "00", "size": 1, "compression": "none"
            }
        }
    });
    let reference = |bytes: &[u8]| ReleaseRef {
        path: "plugins/weather/1.0.0/release.json".into(),
        sha256: sha256_hex(bytes),
        size: bytes.len() as u64,
        abi: Some(1),
        capabilities: None,
        floors: Default::default(),
        deps: Default::default(),
    };
    let bytes = serde_json::to_vec(&release).unwrap();
    let read = verify_release(&bytes, &reference(&bytes), "weather", "1.0.0").unwrap();
    assert_eq!((read.format, read.abi), (1, 1));
    assert_eq!(read.targets["x86_64-unknown-linux-gnu"].size, 1);

    // The index says another ABI: the release does not match it.
    let mut listed = reference(&bytes);
    listed.abi = Some(2);
    let error = verify_release(&bytes, &listed, "weather", "1.0.0").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the index says it is built for plugin ABI v2, the release file says v1"),
        "{error}"
    );

    let mut newer = release.clone();
    newer["format"] = 2.into();
    newer["targets"] = serde_json::json!([]);
    let bytes = serde_json::to_vec(&newer).unwrap();
    let error = verify_release(&bytes, &reference(&bytes), "weather", "1.0.0").unwrap_err();
    assert_eq!(
        error.to_string(),
        "plugins/weather/1.0.0/release.json: registry release file format 2 is newer than this backworks reads (1); upgrade backworks to use this registry"
    );
}

#[test]
fn a_document_that_cannot_be_read_names_the_fields_it_did_not_expect() {
    let error = parse_json::<Envelope>(br#"{"format": 1, "sig": "x", "index": "{}"}"#).unwrap_err();
    assert!(error.starts_with("missing field `signature`"), "{error}");
    assert!(error.ends_with("; it has unknown field `sig`"), "{error}");
    // Read: the unknown field is ignored.
    let envelope =
        parse_json::<Envelope>(br#"{"signature": "s", "index": "i", "sig": "x"}"#).unwrap();
    assert_eq!(envelope.format, 1);
    // Not an object: serde's message alone.
    assert_eq!(
        parse_json::<Envelope>(b"\"text\"").unwrap_err(),
        "invalid type: string \"text\", expected struct Envelope at line 1 column 6"
    );
}

#[test]
fn publishing_writes_the_format_and_each_version_s_abi_into_the_index() {
    let (pk, sk) = keys();
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::open(dir.path(), sk, 3600).unwrap();
    tree.publish(demo_upload("1.0.0", b"library")).unwrap();
    let bytes = std::fs::read(dir.path().join(INDEX_PATH)).unwrap();
    let envelope: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(envelope["format"], FORMAT);
    let index: serde_json::Value =
        serde_json::from_str(envelope["index"].as_str().unwrap()).unwrap();
    assert_eq!(index["format"], FORMAT);
    let reference = &index["plugins"]["demo"]["versions"]["1.0.0"];
    assert_eq!(reference["abi"], 1);
    let index = verify_index(
        &bytes,
        &pk,
        Freshness {
            last_serial: None,
            now: 0,
        },
        "t",
    )
    .unwrap();
    assert_eq!(index.plugins["demo"].versions["1.0.0"].abi, Some(1));
}

fn declaration(json: &str) -> Capabilities {
    Capabilities::from_json(json).unwrap()
}

#[test]
fn capabilities_are_carried_by_release_and_index_and_absent_when_undeclared() {
    let none = declaration(r#"{"network":"none"}"#);
    let mut release = Release {
        format: FORMAT,
        name: "weather".into(),
        version: "1.0.0".into(),
        description: String::new(),
        keywords: Vec::new(),
        abi: 1,
        publisher: "0000000000000001".into(),
        published: 1,
        capabilities: None,
        targets: BTreeMap::new(),
    };
    // Undeclared: no field at all, so older readers and writers agree.
    let text = serde_json::to_string(&release).unwrap();
    assert!(!text.contains("capabilities"), "{text}");
    release.capabilities = Some(none.clone());
    let text = serde_json::to_string(&release).unwrap();
    assert!(
        text.contains(
            r#""capabilities":{"network":"none","files":{"read":[],"write":[]},"env":[]}"#
        ),
        "{text}"
    );
    let read: Release = parse_json(text.as_bytes()).unwrap();
    assert_eq!(read.capabilities, Some(none.clone()));
    // A declaration that is not valid is not a release.
    let bad = text.replace(r#""network":"none""#, r#""network":"everywhere""#);
    let error = parse_json::<Release>(bad.as_bytes()).unwrap_err();
    assert!(error.contains("capabilities.network"), "{error}");

    // An old index entry (no field) still reads.
    let old: ReleaseRef =
        parse_json(br#"{"path":"plugins/weather/1.0.0/release.json","sha256":"00","size":1}"#)
            .unwrap();
    assert_eq!(old.capabilities, None);
}

#[test]
fn a_release_must_declare_what_the_index_says_it_does() {
    let mut release = Release {
        format: FORMAT,
        name: "weather".into(),
        version: "1.0.0".into(),
        description: String::new(),
        keywords: Vec::new(),
        abi: 1,
        publisher: "0000000000000001".into(),
        published: 1,
        capabilities: Some(declaration(r#"{"network":["api.example.com:443"]}"#)),
        targets: BTreeMap::new(),
    };
    let bytes = serde_json::to_vec(&release).unwrap();
    let reference = |bytes: &[u8], capabilities: Option<Capabilities>| ReleaseRef {
        path: "plugins/weather/1.0.0/release.json".into(),
        sha256: sha256_hex(bytes),
        size: bytes.len() as u64,
        abi: Some(1),
        capabilities,
        floors: Default::default(),
        deps: Default::default(),
    };
    // The same declaration, or an index that predates the field: read.
    for listed in [release.capabilities.clone(), None] {
        verify_release(&bytes, &reference(&bytes, listed), "weather", "1.0.0").unwrap();
    }
    // The index claims less than the release file.
    let less = Some(declaration(r#"{"network":"none"}"#));
    let error =
        verify_release(&bytes, &reference(&bytes, less.clone()), "weather", "1.0.0").unwrap_err();
    assert_eq!(
        error.to_string(),
        "release file plugins/weather/1.0.0/release.json does not match the signed index: the index says it declares network none, the release file says it declares network api.example.com:443; the registry or a mirror serves altered data"
    );
    // The index declares, the release file does not.
    release.capabilities = None;
    let bytes = serde_json::to_vec(&release).unwrap();
    let error = verify_release(&bytes, &reference(&bytes, less), "weather", "1.0.0").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the release file says it declares nothing (the process tier's defaults)"),
        "{error}"
    );
}

#[test]
fn every_target_of_a_release_must_declare_the_same() {
    let release = Release {
        format: FORMAT,
        name: "weather".into(),
        version: "1.0.0".into(),
        description: String::new(),
        keywords: Vec::new(),
        abi: 1,
        publisher: String::new(),
        published: 0,
        capabilities: None,
        targets: BTreeMap::new(),
    };
    let none = declaration(r#"{"network":"none"}"#);
    let env = declaration(r#"{"env":["HOME"]}"#);
    let linux = String::from("x86_64-unknown-linux-gnu");
    let arm = String::from("aarch64-unknown-linux-gnu");
    let windows = String::from("x86_64-pc-windows-gnu");
    assert_eq!(
        agreed_capabilities(
            &release,
            vec![
                (linux.clone(), Some(none.clone())),
                (arm.clone(), Some(none.clone()))
            ]
        )
        .unwrap(),
        Some(none.clone())
    );
    assert_eq!(
        agreed_capabilities(&release, vec![(linux.clone(), None)]).unwrap(),
        None
    );
    let error = agreed_capabilities(
        &release,
        vec![
            (linux, Some(none.clone())),
            (windows, None),
            (arm, Some(none)),
            (String::from("aarch64-apple-darwin"), Some(env)),
        ],
    )
    .unwrap_err();
    assert!(matches!(error, RegistryError::CapabilitiesDiffer { .. }));
    assert_eq!(
        error.to_string(),
        "the targets of weather 1.0.0 declare different capabilities: x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu (network none); x86_64-pc-windows-gnu (nothing declared); aarch64-apple-darwin (network none; env HOME); every target of a release must declare the same (build them all from one `[package.metadata.backworks.capabilities]`)"
    );
}

#[test]
fn a_search_hit_carries_what_its_newest_version_declares() {
    let mut index = index(1, 5_000);
    let none = declaration(r#"{"network":"none"}"#);
    let versions = &mut index.plugins.get_mut("weather").unwrap().versions;
    versions.get_mut("1.10.0").unwrap().capabilities = Some(none.clone());
    versions.get_mut("1.0.0").unwrap().capabilities = Some(declaration(r#"{"network":"any"}"#));
    let page = search(&index, "weather", 1, 20);
    assert_eq!(page.hits[0].name, "weather");
    assert_eq!(page.hits[0].capabilities, Some(none));
    assert_eq!(page.hits[1].capabilities, None);
    // Written as `null` when undeclared; an answer without it reads.
    let text = serde_json::to_string(&page.hits[1]).unwrap();
    assert!(text.contains(r#""capabilities":null"#), "{text}");
    let old: SearchHit = parse_json(
        br#"{"name":"weather","version":"1.0.0","description":"","keywords":[],"score":1}"#,
    )
    .unwrap();
    assert_eq!(old.capabilities, None);
}

/// weather 1.0.0's x86_64 Linux artifact (a stand-in file) with `floor`
/// and `deps`: the per-artifact records the floor and dependency tests vary.
fn weather_artifact(floor: PlatformFloor, deps: Option<Vec<Dependency>>) -> Artifact {
    Artifact {
        path: "plugins/weather/1.0.0/x86_64-unknown-linux-gnu/weather.so".into(),
        signature: "plugins/weather/1.0.0/x86_64-unknown-linux-gnu/weather.so.minisig".into(),
        sha256: "00".repeat(32),
        size: 1,
        floor,
        deps,
    }
}

/// weather 1.0.0 with the artifact `linux` for x86_64 Linux and `windows`
/// for x86_64 Windows.
fn linux_and_windows(linux: Artifact, windows: Artifact) -> Release {
    Release {
        format: FORMAT,
        name: "weather".into(),
        version: "1.0.0".into(),
        description: String::new(),
        keywords: Vec::new(),
        abi: 1,
        publisher: "0000000000000001".into(),
        published: 1,
        capabilities: None,
        targets: BTreeMap::from([
            ("x86_64-unknown-linux-gnu".into(), linux),
            ("x86_64-pc-windows-gnu".into(), windows),
        ]),
    }
}

/// The index's record of weather 1.0.0's release file `bytes`, listing
/// `floors` and dependency counts `deps`.
fn release_ref(
    bytes: &[u8],
    floors: BTreeMap<String, PlatformFloor>,
    deps: BTreeMap<String, DependencyCount>,
) -> ReleaseRef {
    ReleaseRef {
        path: "plugins/weather/1.0.0/release.json".into(),
        sha256: sha256_hex(bytes),
        size: bytes.len() as u64,
        abi: Some(1),
        capabilities: None,
        floors,
        deps,
    }
}

/// Issue 17: an artifact's floor is in the release file (absent when it
/// has none, and readable without it), listed per target in the signed
/// index, and a release file whose floors are not the index's is refused.
#[test]
fn floors_are_recorded_per_artifact_and_must_be_the_index_s() {
    let artifact = |floor: PlatformFloor| weather_artifact(floor, None);
    let glibc = |text: &str| PlatformFloor {
        glibc: floor::Version::parse(text),
        macos: None,
    };
    // Nothing recorded: no field, and a file without one reads.
    let json = serde_json::to_value(artifact(PlatformFloor::default())).unwrap();
    assert_eq!(json.get("floor"), None, "{json}");
    let read: Artifact = serde_json::from_value(json).unwrap();
    assert!(read.floor.is_empty());

    let mut release =
        linux_and_windows(artifact(glibc("2.17")), artifact(PlatformFloor::default()));
    let bytes = serde_json::to_vec(&release).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains(r#""floor":{"glibc":"2.17"}"#), "{text}");
    let floors = ReleaseRef::floors_of(&release);
    assert_eq!(
        floors,
        BTreeMap::from([("x86_64-unknown-linux-gnu".to_owned(), glibc("2.17"))])
    );
    let reference = |bytes: &[u8], floors: BTreeMap<String, PlatformFloor>| {
        release_ref(bytes, floors, BTreeMap::new())
    };
    // The same floors, or an index that predates the field: read.
    for listed in [floors.clone(), BTreeMap::new()] {
        verify_release(&bytes, &reference(&bytes, listed), "weather", "1.0.0").unwrap();
    }
    // The release file says 2.34, the signed index 2.17.
    release
        .targets
        .get_mut("x86_64-unknown-linux-gnu")
        .unwrap()
        .floor = glibc("2.34");
    let bytes = serde_json::to_vec(&release).unwrap();
    let error = verify_release(&bytes, &reference(&bytes, floors), "weather", "1.0.0").unwrap_err();
    assert_eq!(
        error.to_string(),
        "release file plugins/weather/1.0.0/release.json does not match the signed index: the index says its artifacts need glibc 2.17 (x86_64-unknown-linux-gnu), the release file says glibc 2.34 (x86_64-unknown-linux-gnu); the registry or a mirror serves altered data"
    );
}

/// A library whose `.dep-v0` section lists `packages` (the plugin `demo`
/// as the root, then each `(name, version, source, kind)`), written by the
/// build's writer.
fn library_listing(packages: &[(&str, &str, &str, &str)]) -> Vec<u8> {
    use backworks_artifact::deps;
    let mut list = vec![serde_json::json!({
        "name": "demo", "version": "0.1.0", "source": "local",
        "dependencies": (1..=packages.len()).collect::<Vec<_>>(), "root": true
    })];
    for (name, version, source, kind) in packages {
        list.push(serde_json::json!({
            "name": name, "version": version, "source": source, "kind": kind
        }));
    }
    let json = serde_json::json!({ "packages": list }).to_string();
    let info: deps::VersionInfo = serde_json::from_str(&json).unwrap();
    deps::object_file("x86_64-unknown-linux-gnu", &deps::compress(&info)).unwrap()
}

const DEMO_FILE: &str = "demo-0.1.0-x86_64-unknown-linux-gnu.so";

/// Issue 17: an artifact's dependency list is read from its bytes in
/// compact form, the plugin's own package left out; a library without one
/// has none (not an error).
#[test]
fn an_artifact_s_dependency_list_is_read_compact() {
    let bytes = library_listing(&[
        ("proc-macro2", "1.0.101", "crates.io", "build"),
        ("helper", "0.2.0", "local", "runtime"),
        ("serde_json", "1.0.145", "crates.io", "runtime"),
    ]);
    let list = artifact_deps(DEMO_FILE, &bytes).unwrap().unwrap();
    let lines: Vec<String> = list.iter().map(Dependency::line).collect();
    assert_eq!(
        lines,
        [
            "proc-macro2 1.0.101 (build)",
            "helper 0.2.0 (local)",
            "serde_json 1.0.145"
        ]
    );
    // A library without the section (a C plugin, an older build).
    // The section renamed: `.dep-v1`.
    let mut bare = bytes.clone();
    let at = bare
        .windows(b".dep-v0\0".len())
        .position(|w| w == b".dep-v0\0")
        .unwrap();
    bare[at + 6] = b'1';
    assert_eq!(artifact_deps(DEMO_FILE, &bare).unwrap(), None);
}

/// A list over the limits, or one that cannot be read, refuses the upload
/// naming the file and the rule.
#[test]
fn a_hostile_dependency_list_is_refused() {
    let many: Vec<(String, String)> = (0..=MAX_DEPENDENCIES)
        .map(|i| (format!("crate{i}"), String::from("1.0.0")))
        .collect();
    let packages: Vec<(&str, &str, &str, &str)> = many
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str(), "crates.io", "runtime"))
        .collect();
    let error = artifact_deps(DEMO_FILE, &library_listing(&packages)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "demo-0.1.0-x86_64-unknown-linux-gnu.so: refusing its dependency list (the `.dep-v0` section): it names 1001 dependencies, at most 1000 are allowed; rebuild it with `cargo backworks build`, or without a list"
    );
    // Exactly the limit is fine.
    assert_eq!(
        artifact_deps(DEMO_FILE, &library_listing(&packages[1..]))
            .unwrap()
            .unwrap()
            .len(),
        MAX_DEPENDENCIES
    );
    let long = "a".repeat(MAX_DEPENDENCY_TEXT + 1);
    for (packages, field) in [
        ([(long.as_str(), "1.0.0", "crates.io", "runtime")], "name"),
        ([("a", "1.0.0", long.as_str(), "runtime")], "source"),
    ] {
        let error = artifact_deps(DEMO_FILE, &library_listing(&packages)).unwrap_err();
        assert!(
            matches!(&error, RegistryError::DependencyList { file, .. } if file == DEMO_FILE),
            "{error:?}"
        );
        assert!(
            error.to_string().contains(&format!(
                "a dependency's {field} is 65 bytes long, at most 64 are allowed"
            )),
            "{error}"
        );
    }
    // A version as long: built from its text.
    let version = format!("1.0.0-{}", "a".repeat(MAX_DEPENDENCY_TEXT));
    let error = artifact_deps(
        DEMO_FILE,
        &library_listing(&[("a", &version, "crates.io", "runtime")]),
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("a dependency's version is 70 bytes long"),
        "{error}"
    );
    // Garbled: not zlib.
    let garbled =
        backworks_artifact::deps::object_file("x86_64-unknown-linux-gnu", b"not zlib").unwrap();
    let error = artifact_deps(DEMO_FILE, &garbled).unwrap_err();
    assert!(
        error.to_string().starts_with(
            "demo-0.1.0-x86_64-unknown-linux-gnu.so: refusing its dependency list (the `.dep-v0` section): the `.dep-v0` section is not zlib-compressed data"
        ),
        "{error}"
    );
}

/// Issue 17: an artifact's dependency list is in the release file (absent
/// when it has none, and readable without it), counted per target in the
/// signed index and in search hits, and a release file whose counts are not
/// the index's is refused.
#[test]
fn dependency_lists_are_recorded_per_artifact_and_must_be_the_index_s() {
    let serde = Dependency {
        name: "serde".into(),
        version: "1.0.228".into(),
        source: "crates.io".into(),
        build: false,
    };
    let artifact = |deps: Option<Vec<Dependency>>| weather_artifact(PlatformFloor::default(), deps);
    let json = serde_json::to_value(artifact(None)).unwrap();
    assert_eq!(json.get("deps"), None, "{json}");
    let read: Artifact = serde_json::from_value(json).unwrap();
    assert_eq!(read.deps, None);

    let mut release = linux_and_windows(artifact(Some(vec![serde.clone()])), artifact(None));
    let bytes = serde_json::to_vec(&release).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        text.contains(r#""deps":[{"name":"serde","version":"1.0.228"}]"#),
        "{text}"
    );
    let counts = ReleaseRef::deps_of(&release);
    let one = DependencyCount {
        runtime: 1,
        build: 0,
    };
    assert_eq!(
        counts,
        BTreeMap::from([("x86_64-unknown-linux-gnu".to_owned(), one)])
    );
    let reference = |bytes: &[u8], deps: BTreeMap<String, DependencyCount>| {
        release_ref(bytes, BTreeMap::new(), deps)
    };
    for listed in [counts.clone(), BTreeMap::new()] {
        verify_release(&bytes, &reference(&bytes, listed), "weather", "1.0.0").unwrap();
    }
    // In the index: counts only (`runtime`, `build`).
    assert_eq!(
        serde_json::to_string(&reference(&bytes, counts.clone()).deps).unwrap(),
        r#"{"x86_64-unknown-linux-gnu":{"runtime":1,"build":0}}"#
    );
    // Search hits carry the newest version's counts.
    let mut index = Index::empty();
    index.plugins.insert(
        "weather".into(),
        IndexEntry {
            description: "forecasts".into(),
            keywords: Vec::new(),
            versions: BTreeMap::from([("1.0.0".into(), reference(&bytes, counts.clone()))]),
        },
    );
    let page = search(&index, "weather", 1, 10);
    assert_eq!(page.hits[0].deps, counts);
    // The release file lists two crates, the signed index one.
    release
        .targets
        .get_mut("x86_64-unknown-linux-gnu")
        .unwrap()
        .deps = Some(vec![
        serde.clone(),
        Dependency {
            name: "syn".into(),
            build: true,
            ..serde
        },
    ]);
    let bytes = serde_json::to_vec(&release).unwrap();
    let error = verify_release(&bytes, &reference(&bytes, counts), "weather", "1.0.0").unwrap_err();
    assert_eq!(
        error.to_string(),
        "release file plugins/weather/1.0.0/release.json does not match the signed index: the index says its artifacts list 1 dependency (x86_64-unknown-linux-gnu), the release file says 2 dependencies (1 build-time only) (x86_64-unknown-linux-gnu); the registry or a mirror serves altered data"
    );
    assert_eq!(
        DependencyCount::default().to_string(),
        "0 dependencies",
        "a list of none"
    );
}
