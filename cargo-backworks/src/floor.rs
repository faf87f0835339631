//! The platform floor a plugin package asks to be built for:
//! `[package.metadata.backworks] glibc = "2.17"` and `macos = "10.13"`.
//!
//! - `glibc`: every `*-linux-gnu*` target of the build is linked by zig
//!   (`cargo zigbuild --target <triple>.<glibc>`), against the symbol
//!   versions of that glibc release, so the library loads on it and every
//!   later one. Without the key a Linux target is linked as it would be
//!   otherwise: the host's with the build machine's own glibc, a cross one
//!   with zig's default (glibc 2.30 for the zig `scripts/setup`
//!   installs) or with a cross gcc's.
//! - `macos`: the `MACOSX_DEPLOYMENT_TARGET` of every Apple target
//!   (`aarch64-apple-darwin` never below 11.0, the first macOS it runs).
//!   Without the key the defaults of `crate::toolchain` apply (11.0 and
//!   10.12) unless the environment sets the variable.
//!
//! After the build the library's own floor, read from its bytes as `check`
//! reads it ([`backworks_artifact::floor`]), must be no newer than the one
//! asked for (`Request::unmet`): the key is a promise the build keeps or
//! refuses, never a hint.

use backworks_artifact::floor::{PlatformFloor, Version};

/// The oldest glibc a floor may name: Rust's standard library supports
/// glibc 2.17 and later on its Linux GNU targets.
pub(crate) const MIN_GLIBC: Version = Version::new(2, 17, 0);

/// The oldest macOS a floor may name: rustc's minimum for
/// `x86_64-apple-darwin`.
pub(crate) const MIN_MACOS: Version = Version::new(10, 12, 0);

/// The first macOS that runs on Apple silicon: `aarch64-apple-darwin`
/// libraries never declare an older one.
pub(crate) const MIN_MACOS_AARCH64: Version = Version::new(11, 0, 0);

/// What a package's `[package.metadata.backworks]` asks for; both `None`
/// without the keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Request {
    /// `glibc`: the oldest glibc release the Linux GNU libraries load on.
    pub glibc: Option<Version>,
    /// `macos`: the oldest macOS the Apple libraries load on.
    pub macos: Option<Version>,
}

/// A `glibc` or `macos` key that is not a floor this build can keep.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`package.metadata.backworks.{field}` {problem}")]
pub struct FloorError {
    /// `glibc` or `macos`.
    pub field: &'static str,
    /// What is wrong and what to write instead.
    pub problem: String,
}

impl Request {
    /// Reads `glibc` and `macos` from a package's `metadata.backworks`
    /// (`null` when the package has none).
    pub(crate) fn from_metadata(backworks: &serde_json::Value) -> Result<Self, FloorError> {
        Ok(Self {
            glibc: version_key(
                backworks,
                "glibc",
                MIN_GLIBC,
                "2.17",
                "Rust's standard library needs glibc 2.17 or later",
            )?,
            macos: version_key(
                backworks,
                "macos",
                MIN_MACOS,
                "10.13",
                "rustc's oldest macOS is 10.12",
            )?,
        })
    }

    /// The `--target` cargo-zigbuild gets for `target`: `<triple>.<glibc>`
    /// for a Linux GNU target when a glibc floor is asked for, else `None`
    /// (the triple as it is).
    pub(crate) fn zig_target(&self, target: &str) -> Option<String> {
        let glibc = self.glibc.filter(|_| links_glibc(target))?;
        Some(format!("{target}.{glibc}"))
    }

    /// The `MACOSX_DEPLOYMENT_TARGET` for `target` when a macOS floor is
    /// asked for and `target` is an Apple one.
    pub(crate) fn deployment_target(&self, target: &str) -> Option<Version> {
        let macos = self.macos.filter(|_| target.contains("-apple-"))?;
        Some(if target.starts_with("aarch64") {
            macos.max(MIN_MACOS_AARCH64)
        } else {
            macos
        })
    }

    /// What is wrong when the library built for `target` has floor `built`:
    /// it needs a newer glibc or macOS than asked for (or its glibc floor
    /// could not be read); `None` when it keeps the request.
    pub(crate) fn unmet(&self, target: &str, built: &PlatformFloor) -> Option<String> {
        if let Some(asked) = self.glibc.filter(|_| links_glibc(target)) {
            match built.glibc {
                Some(needed) if needed > asked => {
                    return Some(format!(
                        "needs glibc {needed}, newer than the floor of glibc {asked} that `package.metadata.backworks.glibc` asks for: a dependency links a symbol that glibc {asked} does not have; raise the floor or drop that dependency"
                    ));
                }
                _ => {}
            }
        }
        if let Some(asked) = self.deployment_target(target) {
            match built.macos {
                Some(declared) if declared > asked => {
                    return Some(format!(
                        "declares macOS {declared}, newer than the floor of macOS {asked} that `package.metadata.backworks.macos` asks for; is MACOSX_DEPLOYMENT_TARGET set by a build script?"
                    ));
                }
                None => {
                    return Some(format!(
                        "declares no minimum macOS, but `package.metadata.backworks.macos` asks for macOS {asked}"
                    ));
                }
                _ => {}
            }
        }
        None
    }
}

/// Whether `target` links against glibc: `*-linux-gnu`, `*-linux-gnueabihf`
/// and the like.
pub(crate) fn links_glibc(target: &str) -> bool {
    target.contains("-linux-gnu")
}

/// The version under `key`, no older than `minimum`.
fn version_key(
    backworks: &serde_json::Value,
    field: &'static str,
    minimum: Version,
    example: &str,
    why: &str,
) -> Result<Option<Version>, FloorError> {
    let value = &backworks[field];
    if value.is_null() {
        return Ok(None);
    }
    let error = |problem: String| FloorError { field, problem };
    let text = value.as_str().ok_or_else(|| {
        error(format!(
            "must be a version in a string, such as \"{example}\" (found `{value}`)"
        ))
    })?;
    let version: Version = text.parse().map_err(|_| {
        error(format!(
            "must be a version such as \"{example}\" (one to three dot-separated numbers), not \"{text}\""
        ))
    })?;
    if version < minimum {
        return Err(error(format!(
            "is {version}, older than {minimum}: {why}; write \"{minimum}\" or later"
        )));
    }
    Ok(Some(version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(metadata: serde_json::Value) -> Result<Request, FloorError> {
        Request::from_metadata(&metadata)
    }

    #[test]
    fn no_keys_ask_for_nothing() {
        assert_eq!(request(json!(null)).unwrap(), Request::default());
        assert_eq!(request(json!({"targets": []})).unwrap(), Request::default());
    }

    #[test]
    fn a_glibc_floor_names_the_zig_target_of_linux_gnu_targets_only() {
        let floor = request(json!({"glibc": "2.17"})).unwrap();
        assert_eq!(
            floor.zig_target("x86_64-unknown-linux-gnu").as_deref(),
            Some("x86_64-unknown-linux-gnu.2.17")
        );
        assert_eq!(
            floor.zig_target("armv7-unknown-linux-gnueabihf").as_deref(),
            Some("armv7-unknown-linux-gnueabihf.2.17")
        );
        assert_eq!(floor.zig_target("x86_64-unknown-linux-musl"), None);
        assert_eq!(floor.zig_target("x86_64-pc-windows-gnu"), None);
        assert_eq!(floor.deployment_target("aarch64-apple-darwin"), None);
    }

    #[test]
    fn apple_silicon_never_goes_below_macos_11() {
        let floor = request(json!({"macos": "10.13"})).unwrap();
        assert_eq!(
            floor.deployment_target("x86_64-apple-darwin"),
            Some(Version::new(10, 13, 0))
        );
        assert_eq!(
            floor.deployment_target("aarch64-apple-darwin"),
            Some(Version::new(11, 0, 0))
        );
        assert_eq!(floor.deployment_target("x86_64-unknown-linux-gnu"), None);
    }

    #[test]
    fn bad_keys_name_the_field_and_what_to_write() {
        let error = request(json!({"glibc": 2.17})).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`package.metadata.backworks.glibc` must be a version in a string, such as \"2.17\" (found `2.17`)"
        );
        let error = request(json!({"glibc": "2.12"})).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`package.metadata.backworks.glibc` is 2.12, older than 2.17: Rust's standard library needs glibc 2.17 or later; write \"2.17\" or later"
        );
        let error = request(json!({"macos": "eleven"})).unwrap_err();
        assert_eq!(error.field, "macos");
        assert_eq!(
            error.problem,
            "must be a version such as \"10.13\" (one to three dot-separated numbers), not \"eleven\""
        );
    }

    #[test]
    fn a_library_newer_than_its_floor_is_named() {
        let floor = request(json!({"glibc": "2.17", "macos": "10.13"})).unwrap();
        let built = |glibc: Option<&str>, macos: Option<&str>| PlatformFloor {
            glibc: glibc.map(|v| v.parse().unwrap()),
            macos: macos.map(|v| v.parse().unwrap()),
        };
        let linux = "x86_64-unknown-linux-gnu";
        assert_eq!(floor.unmet(linux, &built(Some("2.17"), None)), None);
        assert_eq!(floor.unmet(linux, &built(Some("2.2.5"), None)), None);
        assert_eq!(floor.unmet(linux, &built(None, None)), None);
        let problem = floor.unmet(linux, &built(Some("2.34"), None)).unwrap();
        assert!(problem.starts_with("needs glibc 2.34, newer than the floor of glibc 2.17"));
        let mac = "x86_64-apple-darwin";
        assert_eq!(floor.unmet(mac, &built(None, Some("10.13"))), None);
        assert!(floor.unmet(mac, &built(None, Some("12.0"))).is_some());
        assert!(floor.unmet(mac, &built(None, None)).is_some());
        assert_eq!(
            floor.unmet("aarch64-apple-darwin", &built(None, Some("11.0"))),
            None
        );
        // Targets the floor does not speak of are not held to it.
        assert_eq!(
            floor.unmet("x86_64-pc-windows-gnu", &built(None, None)),
            None
        );
    }
}
