//! The operations of [`PluginMarketplace`]: `search`, `info`, `install`, `update`,
//! `download_update` (the automatic updater's), `record`, `remove` and
//! `prepare` (`serve`'s marketplace plugins, `--locked`, `--offline`), each
//! a sequence of the other modules' steps: accept the index (`trust`),
//! choose a version (`policy`), fetch it into the cache (`download`), pin it
//! in the lock file.

use super::*;

/// The largest search answer read from a registry's API.
pub(super) const SEARCH_LIMIT: u64 = 8 * 1024 * 1024;
/// Search hits asked for (the registry's maximum page size).
pub(super) const SEARCH_PAGE: usize = 100;

impl PluginMarketplace {
    /// Searches the registry: its `GET /api/v1/search` for an HTTP registry
    /// (the verified index, searched here, when the server has no such API:
    /// a plain static file server answers 404), the verified index for a
    /// directory.
    pub async fn search(&self, query: &str) -> Result<SearchPage, MarketplaceError> {
        if let (RegistryLocation::Http(base), Some(client)) = (&self.registry, &self.client) {
            let url = registry::location::search_url(base, query, SEARCH_PAGE).map_err(|e| {
                MarketplaceError::Fetch {
                    url: base.to_string(),
                    reason: e.to_string(),
                }
            })?;
            let mut pace = self.limits.start(url.as_str());
            let response = pace
                .wait(async {
                    client
                        .get(url.clone())
                        .send()
                        .await
                        .map_err(|e| fetch_error(url.as_str(), &e))
                })
                .await?;
            if response.status() != reqwest::StatusCode::NOT_FOUND {
                let bytes = read_response(response, url.as_str(), SEARCH_LIMIT, &mut pace).await?;
                return registry::parse_json(&bytes).map_err(|e| MarketplaceError::Fetch {
                    url: url.to_string(),
                    reason: format!("the answer is not a search result: {e}"),
                });
            }
        }
        let index = self.fetch_index().await?;
        Ok(registry::search(&index, query, 1, SEARCH_PAGE))
    }

    /// The release file of the newest version of `name` that `requirement`
    /// allows (whatever plugin ABI it is built for), fetched and verified
    /// against the signed index, as `plugins info` shows it: its targets,
    /// their floors and dependency lists. Nothing is downloaded but the
    /// index and that file, nothing pinned.
    pub async fn info(
        &self,
        name: &str,
        requirement: &VersionReq,
    ) -> Result<Release, MarketplaceError> {
        let index = self.fetch_index().await?;
        if !index.plugins.contains_key(name) {
            return Err(MarketplaceError::UnknownPlugin {
                name: name.to_owned(),
                registry: self.registry.to_string(),
            });
        }
        let version = index.newest_matching(name, requirement).ok_or_else(|| {
            MarketplaceError::NoMatchingVersion {
                name: name.to_owned(),
                requirement: requirement.to_string(),
                available: list_or(index.versions(name), "no versions"),
            }
        })?;
        let reference = self.reference(&index, name, &version)?;
        self.release(reference, name, &version).await
    }

    /// Installs the newest version of `name` that `requirement` allows:
    /// downloaded and verified into the cache (see the module docs), then
    /// pinned in the lock file (rewritten atomically). Refused when it is
    /// below the locked version, or signed by another key than the locked
    /// one.
    pub async fn install(
        &self,
        name: &str,
        requirement: &VersionReq,
    ) -> Result<Installed, MarketplaceError> {
        let locked = self.lock()?.get(name, &self.target).cloned();
        let (index, recording) = self.accept_index().await?;
        // The download runs while the index's serial is recorded; both end
        // before the lock pins anything.
        let (installed, recorded) = tokio::join!(
            self.install_from(&index, name, requirement, locked.as_ref()),
            recording.wait()
        );
        recorded?;
        let installed = installed?;
        self.record(&installed)?;
        Ok(installed)
    }

    /// [`Self::install`]'s choice and download, from an accepted `index`.
    pub(super) async fn install_from(
        &self,
        index: &Index,
        name: &str,
        requirement: &VersionReq,
        locked: Option<&LockedPlugin>,
    ) -> Result<Installed, MarketplaceError> {
        let Choice { version, skipped } = self.choose(index, name, requirement).await?;
        if let Some(locked) = &locked
            && version < locked.version
        {
            return Err(MarketplaceError::Downgrade {
                name: name.to_owned(),
                locked: locked.version.clone(),
                offered: version,
            });
        }
        // The locked version again (e.g. after the cache was cleared) must be
        // the very bytes the lock pins.
        let same = locked.filter(|l| l.version == version);
        let mut installed = self
            .fetch(
                index,
                name,
                &version,
                locked.map(|l| l.key_id.as_str()),
                same.map(|l| l.sha256.as_str()),
            )
            .await?;
        installed.skipped = skipped;
        Ok(installed)
    }

    /// Updates `name`, or every plugin the lock pins for this target, to
    /// the newest version the `updates:` policy allows (and the plugin's
    /// `version` requirement in `backworks.yaml`, if it has one); each
    /// success rewrites the lock file. Stops at the first refusal. An
    /// update that asks for more capabilities than the locked version
    /// declared is held back (not downloaded, [`UpdateOutcome::held`])
    /// unless `accept_capabilities`.
    pub async fn update(
        &self,
        name: Option<&str>,
        accept_capabilities: bool,
    ) -> Result<Vec<UpdateOutcome>, MarketplaceError> {
        let lock = self.lock()?;
        let entries: Vec<LockedPlugin> = lock
            .entries()
            .iter()
            .filter(|e| e.target == self.target && name.is_none_or(|n| n == e.name))
            .cloned()
            .collect();
        if let Some(name) = name
            && entries.is_empty()
        {
            return Err(MarketplaceError::NotInstalled {
                name: name.to_owned(),
                lock: self.lock_path.clone(),
            });
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.fetch_index().await?;
        let mut outcomes = Vec::new();
        for entry in entries {
            let (newer, skipped) = self.newer(&index, &entry).await?;
            let mut held = None;
            let to = match newer {
                Some(version) => {
                    if !accept_capabilities {
                        held = self.held_back(&index, &entry, &version).await?;
                    }
                    if held.is_some() {
                        None
                    } else {
                        let installed = self
                            .fetch(&index, &entry.name, &version, Some(&entry.key_id), None)
                            .await?;
                        self.record(&installed)?;
                        Some(installed)
                    }
                }
                None => None,
            };
            outcomes.push(UpdateOutcome {
                name: entry.name.clone(),
                from: entry.version.clone(),
                to,
                held,
                skipped,
            });
        }
        Ok(outcomes)
    }

    /// For the automatic updater: fetches the index and, when the policy
    /// allows a newer version of the locked plugin `name`, downloads and
    /// verifies it into the cache **without** touching the lock file (call
    /// [`record`](Self::record) once the new version is running). A newer
    /// version that asks for more capabilities than the locked one declared
    /// is not downloaded: [`Download::Held`].
    pub async fn download_update(&self, name: &str) -> Result<Download, MarketplaceError> {
        let entry = self
            .lock()?
            .get(name, &self.target)
            .cloned()
            .ok_or_else(|| MarketplaceError::NotInstalled {
                name: name.to_owned(),
                lock: self.lock_path.clone(),
            })?;
        let (index, recording) = self.accept_index().await?;
        let download = async {
            let (newer, skipped) = self.newer(&index, &entry).await?;
            for skipped in &skipped {
                tracing::debug!(plugin = %entry.name, "{skipped}");
            }
            let Some(version) = newer else {
                return Ok(Download::UpToDate);
            };
            if let Some(held) = self.held_back(&index, &entry, &version).await? {
                return Ok(Download::Held(held));
            }
            Ok(Download::Ready(
                self.fetch(&index, name, &version, Some(&entry.key_id), None)
                    .await?,
            ))
        };
        let (downloaded, recorded) = tokio::join!(download, recording.wait());
        recorded?;
        downloaded
    }

    /// Pins `installed` in the lock file, for every target its release
    /// has (replacing every entry of the plugin: a target the release does
    /// not have is no longer pinned), rewriting the file atomically.
    pub fn record(&self, installed: &Installed) -> Result<(), MarketplaceError> {
        let _held = self.hold(STATE_LOCK, true)?;
        let mut lock = self.lock()?;
        let pins: Vec<&LockedPlugin> = std::iter::once(&installed.plugin)
            .chain(&installed.others)
            .collect();
        let targets: Vec<&str> = pins.iter().map(|pin| pin.target.as_str()).collect();
        lock.keep_targets(&installed.plugin.name, &targets);
        for pin in pins {
            lock.upsert(pin.clone());
        }
        lock.write()?;
        Ok(())
    }

    /// Removes `name` from the lock file (every target; rewritten
    /// atomically), then its files from the cache. Returns the entries
    /// removed.
    pub async fn remove(&self, name: &str) -> Result<Vec<LockedPlugin>, MarketplaceError> {
        let removed = {
            let _held = self.hold(STATE_LOCK, true)?;
            let mut lock = self.lock()?;
            let removed = lock.remove(name);
            if removed.is_empty() {
                return Err(MarketplaceError::NotInstalled {
                    name: name.to_owned(),
                    lock: self.lock_path.clone(),
                });
            }
            lock.write()?;
            removed
        };
        if registry::is_valid_name(name) {
            let dir = self.cache_dir.join(name);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &dir)(e)),
            }
        }
        Ok(removed)
    }

    /// For `backworks serve`: the cached library of every `type: marketplace`
    /// entry of `plugins`, installing what is missing unless `mode` forbids
    /// it. With `locked`, each must be exactly what the lock pins (the
    /// pinned version may still be downloaded into an empty cache); with
    /// `offline`, the network is never used.
    pub async fn prepare(
        &self,
        plugins: &[PluginConfig],
        mode: ServeMode,
    ) -> Result<Vec<Resolved>, MarketplaceError> {
        let mut resolved = Vec::new();
        let mut index: Option<Index> = None;
        for plugin in plugins {
            let PluginKind::Marketplace { requirement, .. } = &plugin.kind else {
                continue;
            };
            let name = plugin.name.as_str();
            let pinned = self.lock()?.get(name, &self.target).cloned();
            let offline = |reason: String| MarketplaceError::Offline {
                name: name.to_owned(),
                requirement: requirement.to_string(),
                cache: self.cache_dir.clone(),
                reason,
            };
            let (plugin, path) = match pinned {
                Some(pin) if requirement.matches(&pin.version) => match self.cached(&pin)? {
                    Some(path) => (pin, path),
                    None if mode.offline => {
                        return Err(offline(format!(
                            "the lock pins {} but the cache has no file for it",
                            pin.version
                        )));
                    }
                    None => {
                        let index = self.index_once(&mut index).await?;
                        self.fetch(
                            index,
                            name,
                            &pin.version,
                            Some(&pin.key_id),
                            Some(&pin.sha256),
                        )
                        .await
                        .map(|installed| (installed.plugin, installed.path))?
                    }
                },
                pinned => {
                    let reason = match &pinned {
                        Some(pin) => format!(
                            "the lock pins {}, which backworks.yaml's `version: \"{requirement}\"` does not allow",
                            pin.version
                        ),
                        None => format!("backworks.lock has no entry for target {}", self.target),
                    };
                    if mode.locked {
                        return Err(MarketplaceError::LockMismatch {
                            name: name.to_owned(),
                            reason: format!(
                                "{reason}, and installing it would change the lock; run `backworks plugins install {name}` (or update) without --locked"
                            ),
                        });
                    }
                    if mode.offline {
                        return Err(offline(reason));
                    }
                    let index = self.index_once(&mut index).await?;
                    let Choice { version, skipped } = self.choose(index, name, requirement).await?;
                    for skipped in &skipped {
                        tracing::info!(plugin = %name, "{skipped}");
                    }
                    if let Some(pin) = &pinned
                        && version < pin.version
                    {
                        return Err(MarketplaceError::Downgrade {
                            name: name.to_owned(),
                            locked: pin.version.clone(),
                            offered: version,
                        });
                    }
                    let key = pinned.as_ref().map(|p| p.key_id.as_str());
                    let installed = self.fetch(index, name, &version, key, None).await?;
                    self.record(&installed)?;
                    (installed.plugin, installed.path)
                }
            };
            resolved.push(Resolved {
                name: name.to_owned(),
                path,
                pin: plugin,
            });
        }
        Ok(resolved)
    }

    /// `plugins lock`: pins every target of the releases the lock pins for
    /// this host (a lock written before every target was pinned, or edited
    /// by hand), without downloading any artifact: this host's pin must be
    /// the signed index's artifact, and each other target's signature must
    /// state its artifact (as `install` checks them). Rewrites the lock file
    /// atomically; returns the pins of those plugins, by name and target.
    pub async fn pin_every_target(&self) -> Result<Vec<LockedPlugin>, MarketplaceError> {
        let entries: Vec<LockedPlugin> = self
            .lock()?
            .entries()
            .iter()
            .filter(|e| e.target == self.target)
            .cloned()
            .collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.fetch_index().await?;
        let mut pins = Vec::new();
        for entry in entries {
            let reference = self.reference(&index, &entry.name, &entry.version)?;
            let release = self.release(reference, &entry.name, &entry.version).await?;
            download::check_pin(
                &release,
                &entry.name,
                &self.target,
                Some(&entry.key_id),
                Some(&entry.sha256),
            )?;
            let others = self
                .pin_others(&release, &entry.name, &entry.version, &entry.key_id)
                .await?;
            pins.push(entry);
            pins.extend(others);
        }
        let _held = self.hold(STATE_LOCK, true)?;
        let mut lock = self.lock()?;
        for pin in &pins {
            // Every target of the plugin's locked release, nothing else.
            let targets: Vec<&str> = pins
                .iter()
                .filter(|p| p.name == pin.name)
                .map(|p| p.target.as_str())
                .collect();
            lock.keep_targets(&pin.name, &targets);
            lock.upsert(pin.clone());
        }
        lock.write()?;
        Ok(pins)
    }

    /// `plugins lock --check`: for each `type: marketplace` plugin of
    /// `backworks.yaml`, the targets the lock pins, and what is wrong for
    /// this host (no pin for its target, a version the requirement does not
    /// allow, targets pinned at different versions). Reads the lock only.
    pub fn check_lock(&self) -> Result<Vec<LockStatus>, MarketplaceError> {
        let lock = self.lock()?;
        Ok(self
            .requirements
            .iter()
            .map(|(name, requirement)| {
                let pins: Vec<LockedPlugin> = lock
                    .entries()
                    .iter()
                    .filter(|e| e.name == *name)
                    .cloned()
                    .collect();
                let here = pins.iter().find(|p| p.target == self.target);
                let problem = match here {
                    None => Some(format!(
                        "not pinned for this host's target {}: run `backworks plugins install {name}`",
                        self.target
                    )),
                    Some(pin) if !requirement.matches(&pin.version) => Some(format!(
                        "pins {}, which backworks.yaml's `version: \"{requirement}\"` does not allow: run `backworks plugins install {name}`",
                        pin.version
                    )),
                    Some(pin) if pins.iter().any(|p| p.version != pin.version) => Some(format!(
                        "targets are pinned at different versions: run `backworks plugins lock` after `backworks plugins install {name}@{}`",
                        pin.version
                    )),
                    Some(_) => None,
                };
                LockStatus {
                    name: name.clone(),
                    requirement: requirement.to_string(),
                    pins,
                    problem,
                }
            })
            .collect())
    }

    /// The target this client downloads and loads artifacts for.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub(super) async fn index_once<'a>(
        &self,
        index: &'a mut Option<Index>,
    ) -> Result<&'a Index, MarketplaceError> {
        match index {
            Some(index) => Ok(index),
            None => Ok(index.insert(self.fetch_index().await?)),
        }
    }
}
