//! What the client believes of a registry, and why: the index verified with
//! the registry key, not older than the newest accepted before (rollback)
//! nor expired (freeze), its serial recorded in the registry state file
//! while the caller goes on; a release file checked against the signed
//! index; an artifact's signature and trusted comment checked against the
//! trusted keys and the locked key.

use super::*;

impl PluginMarketplace {
    /// Fetches, verifies and accepts the index (see [`Self::accept_index`]),
    /// its serial recorded in the state file before it is used.
    pub(super) async fn fetch_index(&self) -> Result<Index, MarketplaceError> {
        let (index, recording) = self.accept_index().await?;
        recording.wait().await?;
        Ok(index)
    }

    /// Fetches, verifies and accepts the index: signed by the registry key,
    /// not older than the newest accepted before, not expired. Its serial
    /// is recorded in the state file (flushed to disk) on a blocking
    /// thread while the caller goes on; the caller waits for the
    /// [`Recording`] before it pins anything.
    pub(super) async fn accept_index(&self) -> Result<(Index, Recording), MarketplaceError> {
        let url = self.location(INDEX_PATH);
        let bytes = self.fetch_small(INDEX_PATH, self.max_download).await?;
        create_dir(&self.cache_dir)?;
        let held = self.hold(STATE_LOCK, true)?;
        let state_path = self.cache_dir.join(STATE_FILE);
        let mut state = read_state(&state_path)?;
        let key = KeyId::of_public_key(&self.registry_key).to_string();
        let last_serial = state.registries.get(&key).map(|seen| seen.serial);
        let freshness = Freshness {
            last_serial,
            now: registry::now(),
        };
        let index = registry::verify_index(&bytes, &self.registry_key, freshness, &url).map_err(
            |error| match error {
                RegistryError::Rollback {
                    serial, last_seen, ..
                } => MarketplaceError::Rollback {
                    url: url.clone(),
                    serial,
                    last_seen,
                },
                RegistryError::Expired { expires, now, .. } => MarketplaceError::Expired {
                    url: url.clone(),
                    expires,
                    now,
                },
                other => MarketplaceError::Index(other),
            },
        )?;
        if last_serial.is_some_and(|last| index.serial <= last) {
            return Ok((index, Recording(None)));
        }
        state.format = 1;
        state.registries.insert(
            key,
            SeenIndex {
                serial: index.serial,
                expires: index.expires,
                registry: self.registry.to_string(),
            },
        );
        let mut text = serde_json::to_vec_pretty(&state).map_err(|e| MarketplaceError::State {
            path: state_path.clone(),
            reason: e.to_string(),
        })?;
        text.push(b'\n');
        let path = state_path.clone();
        let recording = tokio::task::spawn_blocking(move || {
            // Held until the new state is in place.
            let _held = held;
            registry::write_atomically(&state_path, &text).map_err(|e| MarketplaceError::State {
                path: state_path.clone(),
                reason: e.to_string(),
            })
        });
        Ok((index, Recording(Some((path, recording)))))
    }

    /// The release file of `name` `version` that `reference` (from the
    /// signed index) names, fetched and verified against it.
    pub(super) async fn release(
        &self,
        reference: &registry::ReleaseRef,
        name: &str,
        version: &Version,
    ) -> Result<Release, MarketplaceError> {
        let version_text = version.to_string();
        let refuse = |reason: String| MarketplaceError::Release {
            name: name.to_owned(),
            version: version_text.clone(),
            reason,
        };
        let expected_path = registry::release_path(name, &version_text);
        if reference.path != expected_path {
            return Err(refuse(format!(
                "the index puts its release file at {:?}, not {expected_path:?}",
                reference.path
            )));
        }
        // One byte more than the index says: `verify_release` then names
        // the size difference as the refusal it is.
        let bytes = self
            .fetch_small(&reference.path, reference.size.saturating_add(1))
            .await?;
        registry::verify_release(&bytes, reference, name, &version_text)
            .map_err(|e| refuse(e.to_string()))
    }

    /// The refusal for a signature of `name` `version` (at `url`) that does
    /// not verify.
    pub(super) fn refusal(
        &self,
        name: &str,
        version: &Version,
        url: &str,
        source: VerifyError,
    ) -> MarketplaceError {
        let version_text = version.to_string();
        match source {
            VerifyError::UntrustedKey { signed_by, trusted } => MarketplaceError::UntrustedKey {
                subject: Subject::new(name, &version_text, url),
                signed_by,
                trusted: list_or(trusted, "none"),
            },
            VerifyError::ClaimsMismatch {
                field: field @ ("name" | "version" | "target"),
                signed,
                actual,
            } => MarketplaceError::WrongComment {
                subject: Subject::new(name, &version_text, url),
                field,
                signed,
                expected: actual,
            },
            source => MarketplaceError::Signature {
                subject: Subject::new(name, &version_text, url),
                source,
            },
        }
    }

    /// Accepts the outcome of the signature check of `name` `version` (at
    /// `url`): it verified with a trusted key, its trusted comment names
    /// exactly `name`, `version` and this host's target, and (when given)
    /// `key` signed it. Returns the key id.
    pub(super) fn accept(
        &self,
        name: &str,
        version: &Version,
        url: &str,
        verified: Result<Verified, VerifyError>,
        key: Option<&str>,
    ) -> Result<KeyId, MarketplaceError> {
        let version_text = version.to_string();
        let wrong_comment = |field: &'static str, signed: String, expected: String| {
            MarketplaceError::WrongComment {
                subject: Subject::new(name, &version_text, url),
                field,
                signed,
                expected,
            }
        };
        let verified = verified.map_err(|source| self.refusal(name, version, url, source))?;
        let claims = &verified.claims;
        for (field, signed, expected) in [
            ("name", &claims.name, name),
            ("version", &claims.version, version_text.as_str()),
            ("target", &claims.target, self.target.as_str()),
        ] {
            if signed != expected {
                return Err(wrong_comment(field, signed.clone(), expected.to_owned()));
            }
        }
        if let Some(key) = key
            && verified.key_id.to_string() != key
        {
            return Err(MarketplaceError::KeyChanged {
                name: name.to_owned(),
                version: version_text,
                locked_key: key.to_owned(),
                new_key: verified.key_id.to_string(),
            });
        }
        Ok(verified.key_id)
    }
}
