//! One version of a plugin into the cache: the release file and the
//! artifact's `.minisig` first, then the library streamed into a staging
//! directory (hashed as it comes by `StreamVerifier`, written by a writer
//! thread: [`StagedFile`]), bounded by the announced size and
//! `max_download`, verified, then renamed into place; an artifact already
//! in the cache is verified again, never trusted as it is.

use super::*;

/// The largest `.minisig` read (they are a few hundred bytes).
pub(super) const SIGNATURE_LIMIT: u64 = 64 * 1024;
/// A download's file in its staging directory, written on a thread of its
/// own as the chunks arrive, so that writing overlaps receiving and hashing.
/// Not flushed to disk (see [`write_cached`]). Dropped before
/// [`StagedFile::finish`], the thread writes what it was given and ends.
pub(super) struct StagedFile {
    pub(super) path: PathBuf,
    pub(super) chunks: Sender<Chunk>,
    pub(super) thread: JoinHandle<std::io::Result<()>>,
}

impl StagedFile {
    pub(super) fn create(path: &Path) -> Result<Self, MarketplaceError> {
        let mut file = File::create(path).map_err(io_error("create", path))?;
        let (chunks, received) = mpsc::channel::<Chunk>();
        let thread = std::thread::Builder::new()
            .name(String::from("backworks-download"))
            .spawn(move || {
                for chunk in received {
                    file.write_all((*chunk).as_ref())?;
                }
                Ok(())
            })
            .map_err(io_error("start a thread to write", path))?;
        Ok(Self {
            path: path.to_owned(),
            chunks,
            thread,
        })
    }

    /// Queues the next chunk; never blocks. A write that failed is reported
    /// by `finish`.
    pub(super) fn write(&self, chunk: Chunk) {
        let _ = self.chunks.send(chunk);
    }

    /// Waits until every chunk is written.
    pub(super) fn finish(self) -> Result<(), MarketplaceError> {
        drop(self.chunks);
        self.thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .map_err(io_error("write", &self.path))
    }
}

/// The artifact's file name, after checking that the release keeps its
/// files in its own directory (`plugins/<name>/<version>/<target>/<file>`,
/// signature at `<file>.minisig`).
pub(super) fn artifact_file_name(
    release: &Release,
    target: &str,
    artifact: &Artifact,
) -> Result<String, String> {
    let dir = format!(
        "{}{target}/",
        registry::version_dir(&release.name, &release.version)
    );
    let file = artifact
        .path
        .strip_prefix(&dir)
        .filter(|file| registry::check_file_name(file).is_ok())
        .ok_or_else(|| {
            format!(
                "its artifact path {:?} is not a file in {dir}",
                artifact.path
            )
        })?;
    let expected = format!("{}{}", artifact.path, api::SIGNATURE_SUFFIX);
    if artifact.signature != expected {
        return Err(format!(
            "its signature path {:?} is not {expected:?}",
            artifact.signature,
        ));
    }
    Ok(file.to_owned())
}

/// Whether `release` is what a lock pins: its publisher `locked_key` and,
/// for `target`, the artifact `locked_sha256` (a release without an
/// artifact for `target` matches no sha256). A changed publisher is
/// reported first: it is the graver news. `None` pins pass.
pub(super) fn check_pin(
    release: &Release,
    name: &str,
    target: &str,
    locked_key: Option<&str>,
    locked_sha256: Option<&str>,
) -> Result<(), MarketplaceError> {
    let listed = release.targets.get(target).map(|a| a.sha256.as_str());
    if let Some(key) = locked_key
        && release.publisher != key
    {
        return Err(MarketplaceError::KeyChanged {
            name: name.to_owned(),
            version: release.version.clone(),
            locked_key: key.to_owned(),
            new_key: release.publisher.clone(),
        });
    }
    if let Some(sha256) = locked_sha256
        && listed != Some(sha256)
    {
        return Err(MarketplaceError::PinMismatch {
            name: name.to_owned(),
            version: release.version.clone(),
            target: target.to_owned(),
            registry_sha256: listed.unwrap_or("(none)").to_owned(),
            locked_sha256: sha256.to_owned(),
        });
    }
    Ok(())
}

pub(super) fn loader_signature_path(path: &Path) -> PathBuf {
    crate::loader::signature_path(path)
}

impl PluginMarketplace {
    /// Installs `name` `version` for this host's target into the cache (or
    /// finds it there, verified again), as described in the module docs.
    /// `key`: the key id it must be signed by (the locked one); `sha256`:
    /// the exact bytes it must be (the lock's).
    pub(super) async fn fetch(
        &self,
        index: &Index,
        name: &str,
        version: &Version,
        key: Option<&str>,
        sha256: Option<&str>,
    ) -> Result<Installed, MarketplaceError> {
        let version_text = version.to_string();
        let refuse = |reason: String| MarketplaceError::Release {
            name: name.to_owned(),
            version: version_text.clone(),
            reason,
        };
        let reference = self.reference(index, name, version)?;
        let release = self.release(reference, name, version).await?;
        // The library's record must declare what the release says: the
        // publisher's signature covers the record, not the registry's copy.
        let declared = |metadata: &PluginMetadata| {
            if metadata.capabilities == release.capabilities {
                Ok(metadata.capabilities.clone())
            } else {
                Err(MarketplaceError::CapabilitiesMismatch {
                    name: name.to_owned(),
                    version: version_text.clone(),
                    release: registry::describe_capabilities(release.capabilities.as_ref()),
                    artifact: registry::describe_capabilities(metadata.capabilities.as_ref()),
                })
            }
        };
        if !host_speaks(release.abi) {
            return Err(MarketplaceError::IncompatibleAbi {
                name: name.to_owned(),
                version: version_text,
                abi: release.abi,
                host_abi: ABI_VERSION,
            });
        }
        let artifact =
            release
                .targets
                .get(&self.target)
                .ok_or_else(|| MarketplaceError::NoTarget {
                    name: name.to_owned(),
                    version: version_text.clone(),
                    target: self.target.clone(),
                    // The registry's text, quoted in an error message.
                    available: list_or(
                        release
                            .targets
                            .keys()
                            .map(|target| crate::report::escape(target)),
                        "none",
                    ),
                })?;
        // Before any byte of it is downloaded: can this system load it?
        if let (Some(needs), Some(running)) = (artifact.floor.glibc, crate::loader::running_glibc())
            && needs > running
        {
            return Err(MarketplaceError::GlibcTooOld {
                name: name.to_owned(),
                version: version_text,
                target: self.target.clone(),
                needs,
                running,
            });
        }
        let file_name = artifact_file_name(&release, &self.target, artifact).map_err(refuse)?;
        check_pin(&release, name, &self.target, key, sha256)?;
        let final_dir = self.version_dir(name, version, &self.target)?;
        let final_file = registry::join_component(&final_dir, "file name", &file_name)
            .map_err(MarketplaceError::UnsafePath)?;
        let plugin = |key_id: KeyId| LockedPlugin {
            name: name.to_owned(),
            version: version.clone(),
            target: self.target.clone(),
            sha256: artifact.sha256.clone(),
            key_id: key_id.to_string(),
        };
        // Already in the cache: verified again, never trusted as it is (the
        // verified claims' sha256 is the file's own).
        // Read as the loader reads: regular files only, bounded sizes.
        if let Ok(bytes) = crate::loader::read_bounded(
            &final_file,
            crate::loader::SizeLimit::Plugin(self.max_download),
        ) && let Ok(text) = crate::loader::read_signature(&final_file)
            && let Ok(verified) = signature::verify(&bytes, &text, &self.trusted_keys)
            && verified.claims.sha256_hex() == artifact.sha256
            && let Ok(key_id) = self.accept(
                name,
                version,
                &final_file.display().to_string(),
                Ok(verified),
                key,
            )
            && let Ok(metadata) = inspect::find_metadata(&bytes)
        {
            return Ok(Installed {
                plugin: plugin(key_id),
                path: final_file,
                capabilities: declared(&metadata)?,
                others: self
                    .pin_others(&release, name, version, &key_id.to_string())
                    .await?,
                skipped: Vec::new(),
            });
        }
        create_dir(&self.cache_dir)?;
        let _held = self.hold_for_install()?;
        let staging = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(&self.cache_dir)
            .map_err(io_error("create a staging directory in", &self.cache_dir))?;
        let staged = registry::join_component(staging.path(), "file name", &file_name)
            .map_err(MarketplaceError::UnsafePath)?;
        let url = self.location(&artifact.path);
        // The signature first: one by a key that is not trusted is refused
        // before the download.
        let signature_url = self.location(&artifact.signature);
        let signature = self
            .fetch_small(&artifact.signature, SIGNATURE_LIMIT)
            .await?;
        let signature = String::from_utf8_lossy(&signature).into_owned();
        let verifier = StreamVerifier::new(&signature, &self.trusted_keys)
            .map_err(|source| self.refusal(name, version, &signature_url, source))?;
        let hashed = self
            .download(name, &version_text, artifact, &url, &staged, verifier)
            .await?;
        // The bytes are on disk only: the metadata record is read back from
        // the staged file (a few pages of it).
        let mut record = None;
        let verified = match File::open(&staged) {
            Ok(file) => hashed.conclude(
                // Only when the check fails, to name what failed.
                || File::open(&staged),
                || {
                    let metadata = inspect::find_metadata_in_file(&file)?;
                    record = Some(metadata.clone());
                    Ok(metadata)
                },
            ),
            Err(e) => return Err(io_error("read back", &staged)(e)),
        };
        let key_id = self.accept(name, version, &signature_url, verified, key)?;
        let others = self
            .pin_others(&release, name, version, &key_id.to_string())
            .await?;
        // Verified, so the record was read.
        let capabilities = match &record {
            Some(metadata) => declared(metadata)?,
            None => None,
        };
        let staged_signature = loader_signature_path(&staged);
        write_cached(&staged_signature, signature.as_bytes())?;
        // Commit: the staging directory becomes the version's directory.
        let parent = final_dir
            .parent()
            .map_or_else(|| self.cache_dir.clone(), Path::to_path_buf);
        create_dir(&parent)?;
        if final_dir.exists() {
            // Left by an older install whose file no longer verifies (or a
            // user's edit): moved aside, removed by the next cleanup.
            let aside = tempfile::Builder::new()
                .prefix(STAGING_PREFIX)
                .tempdir_in(&self.cache_dir)
                .map_err(io_error("create a staging directory in", &self.cache_dir))?
                .keep();
            std::fs::rename(&final_dir, aside.join("old"))
                .map_err(io_error("move aside", &final_dir))?;
        }
        let kept = staging.keep();
        std::fs::rename(&kept, &final_dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&kept);
            io_error("move the download into", &final_dir)(e)
        })?;
        Ok(Installed {
            plugin: plugin(key_id),
            path: final_file,
            capabilities,
            others,
            skipped: Vec::new(),
        })
    }

    /// The lock's pins for `release`'s targets other than this client's,
    /// made without downloading their artifacts: each one's `.minisig` is
    /// fetched and checked with [`signature::verify_claims`] (a trusted key
    /// signed its trusted comment), and the comment must state the artifact
    /// the signed index lists (name, version, target, sha256), signed by
    /// `key_id`, the key of this target's artifact. A host of that target
    /// then downloads exactly the pinned bytes and verifies them itself.
    pub(super) async fn pin_others(
        &self,
        release: &Release,
        name: &str,
        version: &Version,
        key_id: &str,
    ) -> Result<Vec<LockedPlugin>, MarketplaceError> {
        let version_text = version.to_string();
        let refuse = |reason: String| MarketplaceError::Release {
            name: name.to_owned(),
            version: version_text.clone(),
            reason,
        };
        let mut pins = Vec::new();
        for (target, artifact) in &release.targets {
            if *target == self.target {
                continue;
            }
            artifact_file_name(release, target, artifact).map_err(refuse)?;
            let url = self.location(&artifact.signature);
            let text = self
                .fetch_small(&artifact.signature, SIGNATURE_LIMIT)
                .await?;
            let verified =
                signature::verify_claims(&String::from_utf8_lossy(&text), &self.trusted_keys)
                    .map_err(|source| self.refusal(name, version, &url, source))?;
            let claims = &verified.claims;
            for (field, signed, expected) in [
                ("name", claims.name.clone(), name),
                ("version", claims.version.clone(), version_text.as_str()),
                ("target", claims.target.clone(), target.as_str()),
                ("sha256", claims.sha256_hex(), artifact.sha256.as_str()),
            ] {
                if signed != expected {
                    return Err(MarketplaceError::WrongComment {
                        subject: Subject::new(name, &version_text, &url),
                        field,
                        signed,
                        expected: expected.to_owned(),
                    });
                }
            }
            if verified.key_id.to_string() != key_id {
                return Err(refuse(format!(
                    "its artifact for {} is signed by key {}, its artifact for {} by key {key_id}; one release has one publisher",
                    crate::report::escape(target),
                    verified.key_id,
                    self.target
                )));
            }
            pins.push(LockedPlugin {
                name: name.to_owned(),
                version: version.clone(),
                target: target.clone(),
                sha256: artifact.sha256.clone(),
                key_id: key_id.to_string(),
            });
        }
        Ok(pins)
    }

    /// Streams the artifact into the file `to`, never more than its
    /// announced size nor `max_download`, through `verifier`; its sha256
    /// must be the release's. The file is written on a thread of its own,
    /// as the chunks come, and complete when this returns.
    pub(super) async fn download(
        &self,
        name: &str,
        version: &str,
        artifact: &Artifact,
        url: &str,
        to: &Path,
        mut verifier: StreamVerifier,
    ) -> Result<Hashed, MarketplaceError> {
        let too_large = |size: u64| MarketplaceError::TooLarge {
            subject: Subject::new(name, version, url),
            size,
            limit: self.max_download,
        };
        let wrong_size = |received: u64, more: bool| MarketplaceError::WrongSize {
            subject: Subject::new(name, version, url),
            expected: artifact.size,
            received,
            more,
        };
        if artifact.size > self.max_download {
            return Err(too_large(artifact.size));
        }
        let bar = self.progress_bar(name, version, artifact.size);
        let mut pace = self.limits.start(url);
        let mut body = self.open(&artifact.path, url, &mut pace).await?;
        if let Some(length) = body.length()
            && length > artifact.size
        {
            return Err(wrong_size(length, true));
        }
        let file = StagedFile::create(to)?;
        let mut received = 0u64;
        while let Some(chunk) = body.next_chunk(url, &mut pace).await? {
            received += (*chunk).as_ref().len() as u64;
            if received > artifact.size {
                return Err(wrong_size(received, true));
            }
            if received > self.max_download {
                return Err(too_large(received));
            }
            verifier.update(&chunk);
            file.write(chunk);
            bar.set_position(received);
        }
        bar.finish_and_clear();
        if received != artifact.size {
            return Err(wrong_size(received, false));
        }
        // Waits for the hashing and writing threads, off the async workers.
        let (hashed, written) =
            tokio::task::spawn_blocking(move || (verifier.finish(), file.finish()))
                .await
                .map_err(|e| MarketplaceError::Fetch {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
        written?;
        let actual = hex::encode(hashed.sha256());
        if actual != artifact.sha256 {
            return Err(MarketplaceError::Tampered {
                subject: Subject::new(name, version, url),
                expected: artifact.sha256.clone(),
                actual,
            });
        }
        Ok(hashed)
    }

    pub(super) fn progress_bar(
        &self,
        name: &str,
        version: &str,
        size: u64,
    ) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("{name} {version}"));
        bar
    }
}
