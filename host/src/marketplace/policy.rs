//! Which version the client takes: `name@requirement` on the command line
//! ([`parse_spec`]), the newest version a requirement or the `updates:`
//! policy allows (never below the locked one: a downgrade is refused), and
//! among those the newest built for the plugin ABI this host speaks
//! ([`host_speaks`]; the newer ones passed over are [`Skipped`]).

use super::*;

/// What `plugins install` was given: `name`, `name@1.2.3` (exactly that
/// version, as `cargo install` reads it) or `name@<requirement>`.
pub fn parse_spec(spec: &str) -> Result<(String, VersionReq), MarketplaceError> {
    let invalid = |reason: String| MarketplaceError::InvalidSpec {
        spec: spec.to_owned(),
        reason,
    };
    let (name, requirement) = match spec.split_once('@') {
        Some((name, requirement)) => (name, Some(requirement)),
        None => (spec, None),
    };
    if !registry::is_valid_name(name) {
        return Err(invalid(format!(
            "`{name}` is not a plugin name (1 to 64 lower-case letters, digits, `-` and `_`, starting with a letter)"
        )));
    }
    let requirement = match requirement {
        None => VersionReq::STAR,
        Some(text) => match Version::parse(text) {
            Ok(version) => VersionReq {
                comparators: vec![semver::Comparator {
                    op: semver::Op::Exact,
                    major: version.major,
                    minor: Some(version.minor),
                    patch: Some(version.patch),
                    pre: version.pre,
                }],
            },
            Err(_) => VersionReq::parse(text)
                .map_err(|e| invalid(format!("`{text}` is not a version or requirement ({e})")))?,
        },
    };
    Ok((name.to_owned(), requirement))
}

/// Whether this host can load a plugin built for plugin ABI `abi` (a
/// major version: a release records the major it was built for, and
/// revisions within a major are compatible, `docs/abi.md`). The one
/// place the marketplace decides it.
pub fn host_speaks(abi: u32) -> bool {
    abi == ABI_VERSION
}

/// What a version declaring `after` asks for that one declaring `before`
/// did not, one line each (empty: nothing more). A version that declares
/// nothing runs with the process tier's defaults
/// ([`Capabilities::process_defaults`]: any network, reads anywhere, no
/// writes, no variables), so that is what it had, or asks for.
pub fn added_capabilities(
    before: Option<&Capabilities>,
    after: Option<&Capabilities>,
) -> Vec<String> {
    // A version that declares nothing runs with the process tier's
    // defaults: those are what it had, or what it asks for.
    let defaults = Capabilities::process_defaults();
    match (before, after) {
        (None, None) => Vec::new(),
        (None, Some(after)) => after.added_since(&defaults),
        (Some(before), None) => defaults.added_since(before),
        (Some(before), Some(after)) => after.added_since(before),
    }
}

/// A release passed over when choosing a version: built for a plugin ABI
/// this host does not speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The plugin.
    pub name: String,
    /// The version passed over.
    pub version: Version,
    /// The plugin ABI it is built for.
    pub abi: u32,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skipped {} {}: built for plugin ABI v{}, this host speaks v{ABI_VERSION}",
            self.name, self.version, self.abi
        )
    }
}

/// A version chosen from an index, and the newer ones passed over.
pub(super) struct Choice {
    pub(super) version: Version,
    pub(super) skipped: Vec<Skipped>,
}

impl PluginMarketplace {
    /// The newest version of `name` allowed by `requirement` that is
    /// built for a plugin ABI this host speaks ([`host_speaks`]), and the
    /// newer ones allowed but built for another.
    pub(super) async fn choose(
        &self,
        index: &Index,
        name: &str,
        requirement: &VersionReq,
    ) -> Result<Choice, MarketplaceError> {
        if !index.plugins.contains_key(name) {
            return Err(MarketplaceError::UnknownPlugin {
                name: name.to_owned(),
                registry: self.registry.to_string(),
            });
        }
        let candidates = index
            .versions(name)
            .into_iter()
            .filter(|version| requirement.matches(version));
        let (chosen, skipped) = self.first_loadable(index, name, candidates).await?;
        match (chosen, skipped.first()) {
            (Some(version), _) => Ok(Choice { version, skipped }),
            (None, Some(newest)) => Err(MarketplaceError::NoCompatibleRelease {
                name: name.to_owned(),
                requirement: requirement.to_string(),
                newest: newest.version.clone(),
                abi: newest.abi,
                older: match skipped.len() - 1 {
                    0 => String::new(),
                    1 => String::from(", and so is the 1 other"),
                    n => format!(", and so are the {n} others"),
                },
                host_abi: ABI_VERSION,
            }),
            (None, None) => Err(MarketplaceError::NoMatchingVersion {
                name: name.to_owned(),
                requirement: requirement.to_string(),
                available: list_or(index.versions(name), "no versions"),
            }),
        }
    }

    /// The first of `candidates` (newest first) built for a plugin ABI this
    /// host speaks, and those before it, which are not.
    pub(super) async fn first_loadable(
        &self,
        index: &Index,
        name: &str,
        candidates: impl IntoIterator<Item = Version>,
    ) -> Result<(Option<Version>, Vec<Skipped>), MarketplaceError> {
        let mut skipped = Vec::new();
        for version in candidates {
            let abi = self.abi_of(index, name, &version).await?;
            if host_speaks(abi) {
                return Ok((Some(version), skipped));
            }
            skipped.push(Skipped {
                name: name.to_owned(),
                version,
                abi,
            });
        }
        Ok((None, skipped))
    }

    /// The plugin ABI `name` `version` is built for: what the index says,
    /// or, in an index written before it said so, what its release file
    /// (verified against the index) says.
    pub(super) async fn abi_of(
        &self,
        index: &Index,
        name: &str,
        version: &Version,
    ) -> Result<u32, MarketplaceError> {
        let reference = self.reference(index, name, version)?;
        if let Some(abi) = reference.abi {
            return Ok(abi);
        }
        Ok(self.release(reference, name, version).await?.abi)
    }

    /// What `name` `version` declares it needs: what the index says, or
    /// (an index that says nothing may predate the field) what its release
    /// file, verified against the index, says. The library must then
    /// declare the same ([`Self::fetch`]).
    pub(super) async fn capabilities_of(
        &self,
        index: &Index,
        name: &str,
        version: &Version,
    ) -> Result<Option<Capabilities>, MarketplaceError> {
        let reference = self.reference(index, name, version)?;
        if let Some(capabilities) = &reference.capabilities {
            return Ok(Some(capabilities.clone()));
        }
        Ok(self.release(reference, name, version).await?.capabilities)
    }

    /// What the locked version of `entry` declared: its library's own
    /// record, from the bytes the lock pins and nowhere else (a registry's
    /// index or release file is the registry's word, not the publisher's):
    /// the cached library when it has the lock's sha256, else that version
    /// fetched again, pinned to the lock's key and sha256. An error when
    /// neither can be had: an update is never applied on a guess.
    pub(super) async fn granted(
        &self,
        index: &Index,
        entry: &LockedPlugin,
    ) -> Result<Option<Capabilities>, MarketplaceError> {
        let pinned = |path: &Path| -> Option<Result<Option<Capabilities>, MarketplaceError>> {
            let bytes = crate::loader::read_bounded(
                path,
                crate::loader::SizeLimit::Plugin(self.max_download),
            )
            .ok()?;
            (registry::sha256_hex(&bytes) == entry.sha256).then(|| {
                inspect::find_metadata(&bytes)
                    .map(|metadata| metadata.capabilities)
                    .map_err(|error| MarketplaceError::Release {
                        name: entry.name.clone(),
                        version: entry.version.to_string(),
                        reason: format!("the locked library's record cannot be read: {error}"),
                    })
            })
        };
        if let Some(path) = self.cached(entry)?
            && let Some(granted) = pinned(&path)
        {
            return granted;
        }
        let fetched = self
            .fetch(
                index,
                &entry.name,
                &entry.version,
                Some(&entry.key_id),
                Some(&entry.sha256),
            )
            .await?;
        pinned(&fetched.path).unwrap_or_else(|| {
            Err(MarketplaceError::Release {
                name: entry.name.clone(),
                version: entry.version.to_string(),
                reason: String::from(
                    "the library fetched for the lock is not the one the lock pins",
                ),
            })
        })
    }

    /// The update of `entry` to `version` held back, if it asks for more
    /// than the locked version declared.
    pub(super) async fn held_back(
        &self,
        index: &Index,
        entry: &LockedPlugin,
        version: &Version,
    ) -> Result<Option<HeldUpdate>, MarketplaceError> {
        let after = self.capabilities_of(index, &entry.name, version).await?;
        let before = self.granted(index, entry).await?;
        let added = added_capabilities(before.as_ref(), after.as_ref());
        Ok((!added.is_empty()).then(|| HeldUpdate {
            name: entry.name.clone(),
            from: entry.version.clone(),
            to: version.clone(),
            added,
        }))
    }

    /// The index's reference to `name` `version`'s release file.
    pub(super) fn reference<'a>(
        &self,
        index: &'a Index,
        name: &str,
        version: &Version,
    ) -> Result<&'a registry::ReleaseRef, MarketplaceError> {
        index
            .release_ref(name, &version.to_string())
            .ok_or_else(|| MarketplaceError::NoMatchingVersion {
                name: name.to_owned(),
                requirement: format!("={version}"),
                available: list_or(index.versions(name), "no versions"),
            })
    }

    /// The version an update of `entry` goes to: the newest one above the
    /// locked version that the policy allows; `None` when there is none.
    /// A registry whose newest version is below the locked one is refused
    /// as a downgrade.
    ///
    /// Versions built for a plugin ABI this host does not speak are passed
    /// over (and returned, newest first) for the newest one it does.
    pub(super) async fn newer(
        &self,
        index: &Index,
        entry: &LockedPlugin,
    ) -> Result<(Option<Version>, Vec<Skipped>), MarketplaceError> {
        let versions = index.versions(&entry.name);
        let Some(newest) = versions.first() else {
            return Err(MarketplaceError::UnknownPlugin {
                name: entry.name.clone(),
                registry: self.registry.to_string(),
            });
        };
        if *newest < entry.version {
            return Err(MarketplaceError::Downgrade {
                name: entry.name.clone(),
                locked: entry.version.clone(),
                offered: newest.clone(),
            });
        }
        let configured = self
            .requirements
            .iter()
            .find(|(name, _)| *name == entry.name)
            .map(|(_, requirement)| requirement);
        let candidates: Vec<Version> = versions
            .into_iter()
            .filter(|candidate| {
                *candidate > entry.version
                    && match self.updates.requirement(&entry.name) {
                        Some(requirement) => requirement.matches(candidate),
                        None => self.updates.allow.permits(&entry.version, candidate),
                    }
                    && configured.is_none_or(|requirement| requirement.matches(candidate))
            })
            .collect();
        self.first_loadable(index, &entry.name, candidates).await
    }
}
