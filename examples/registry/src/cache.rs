//! The local cache of downloaded model versions.
//!
//! `<root>/<name>/<version>/` holds a version's artifacts once they have
//! been downloaded completely AND verified; a version is downloaded into a
//! private staging folder first and renamed into place only after the
//! checks pass, so a half-downloaded or broken model is never served, and a
//! crash mid-download leaves nothing that looks complete.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::client::{MlflowClient, ModelVersion};
use crate::error::{RegistryError, RegistryErrorKind};

/// Marks a verified version folder.
const VERIFIED: &str = ".verified";

/// Checks a downloaded model folder before it may serve (the server loads
/// the TorchScript file and runs a warm-up forward here).
pub type Verify = dyn Fn(&Path) -> Result<(), RegistryError> + Send + Sync;

/// Bounds on what one model version may download.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    /// Most files in a version.
    pub max_files: usize,
    /// Most bytes in a version, all files together.
    pub max_bytes: u64,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_files: 256,
            max_bytes: 4 << 30,
        }
    }
}

/// Downloaded, verified model versions under one folder.
#[derive(Debug, Clone)]
pub struct ModelCache {
    root: PathBuf,
    limits: CacheLimits,
}

static STAGING: AtomicU64 = AtomicU64::new(0);

fn cache_err(path: &Path, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::new(RegistryErrorKind::Cache, format!("{}: {e}", path.display()))
}

/// The checks every model folder passes before anything else: a
/// `model.json` manifest that is a JSON object naming its model file, and
/// that file present.
pub fn check_manifest(dir: &Path) -> Result<(), RegistryError> {
    let manifest = dir.join("model.json");
    let text = std::fs::read(&manifest).map_err(|e| {
        RegistryError::verification(format!("{}: no readable manifest: {e}", manifest.display()))
    })?;
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        RegistryError::verification(format!("{}: not valid JSON: {e}", manifest.display()))
    })?;
    let file = value["file"].as_str().unwrap_or("model.pt");
    if file.contains('/') || file.contains("..") || !dir.join(file).is_file() {
        return Err(RegistryError::verification(format!(
            "{}: its model file {file:?} is missing",
            manifest.display()
        )));
    }
    Ok(())
}

impl ModelCache {
    /// A cache under `root` (created when needed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            limits: CacheLimits::default(),
        }
    }

    /// Replaces the download limits.
    pub fn with_limits(mut self, limits: CacheLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The folder of `name` at `version`.
    pub fn dir(&self, name: &str, version: u64) -> PathBuf {
        self.root.join(name).join(version.to_string())
    }

    /// The version whose folder `dir` is: a cached version's
    /// (`<name>/<version>`) or one being verified (its staging folder, the
    /// path the verification gets). `None` for any other folder.
    pub fn version_of(dir: &Path) -> Option<u64> {
        let name = dir.file_name()?.to_str()?;
        let version = match name.strip_prefix(".staging-") {
            Some(rest) => rest.split('-').next()?,
            None => name,
        };
        version.parse().ok()
    }

    /// Whether `name` at `version` is already downloaded and verified.
    pub fn contains(&self, name: &str, version: u64) -> bool {
        self.dir(name, version).join(VERIFIED).is_file()
    }

    /// The folder of `version`, downloading and verifying it first unless
    /// the cache has it. On any failure nothing is left in place.
    pub async fn fetch(
        &self,
        client: &MlflowClient,
        version: &ModelVersion,
        verify: &Verify,
    ) -> Result<PathBuf, RegistryError> {
        let target = self.dir(&version.name, version.version);
        if self.contains(&version.name, version.version) {
            return Ok(target);
        }
        let parent = target.parent().expect("name/version has a parent");
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| cache_err(parent, e))?;
        let staging = parent.join(format!(
            ".staging-{}-{}-{}",
            version.version,
            std::process::id(),
            STAGING.fetch_add(1, Ordering::Relaxed)
        ));
        let result = self.fill(client, version, &staging, verify).await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(e);
        }
        // A concurrent fetch of the same version may have won the rename.
        let _ = tokio::fs::remove_dir_all(&target).await;
        tokio::fs::rename(&staging, &target)
            .await
            .map_err(|e| cache_err(&target, e))?;
        Ok(target)
    }

    async fn fill(
        &self,
        client: &MlflowClient,
        version: &ModelVersion,
        staging: &Path,
        verify: &Verify,
    ) -> Result<(), RegistryError> {
        tokio::fs::create_dir_all(staging)
            .await
            .map_err(|e| cache_err(staging, e))?;
        let uri = client.download_uri(version).await?;
        if let Some(root) = uri.strip_prefix("mlflow-artifacts:") {
            self.download_tree(client, root.trim_start_matches('/'), staging)
                .await?;
        } else {
            let local = uri.strip_prefix("file://").unwrap_or(&uri);
            let local = Path::new(local);
            if !local.is_absolute() || !local.is_dir() {
                return Err(RegistryError::new(
                    RegistryErrorKind::Protocol,
                    format!(
                        "model {:?} version {}: artifacts at {uri:?} are neither served by the tracking server nor a local folder",
                        version.name, version.version
                    ),
                ));
            }
            self.copy_tree(local, staging)?;
        }
        let dir = staging.to_owned();
        check_manifest(&dir)?;
        verify(&dir).map_err(|e| {
            RegistryError::verification(format!(
                "model {:?} version {} failed verification: {e}",
                version.name, version.version
            ))
        })?;
        tokio::fs::write(staging.join(VERIFIED), b"")
            .await
            .map_err(|e| cache_err(staging, e))
    }

    async fn download_tree(
        &self,
        client: &MlflowClient,
        root: &str,
        into: &Path,
    ) -> Result<(), RegistryError> {
        let (mut files, mut bytes) = (0usize, 0u64);
        let mut folders = vec![String::new()];
        while let Some(rel) = folders.pop() {
            let listed = if rel.is_empty() {
                root.to_owned()
            } else {
                format!("{root}/{rel}")
            };
            for entry in client.list_artifacts(&listed).await? {
                let name = entry.path.rsplit('/').next().unwrap_or(&entry.path);
                if name.is_empty() || name == "." || name == ".." {
                    continue;
                }
                let child = if rel.is_empty() {
                    name.to_owned()
                } else {
                    format!("{rel}/{name}")
                };
                if entry.is_dir {
                    tokio::fs::create_dir_all(into.join(&child))
                        .await
                        .map_err(|e| cache_err(into, e))?;
                    folders.push(child);
                    continue;
                }
                files += 1;
                bytes = bytes.saturating_add(entry.size);
                self.within_limits(files, bytes)?;
                let left = self.limits.max_bytes - (bytes - entry.size);
                let data = client
                    .download_artifact(
                        &format!("{root}/{child}"),
                        left.min(usize::MAX as u64) as usize,
                    )
                    .await?;
                let path = into.join(&child);
                tokio::fs::write(&path, &data)
                    .await
                    .map_err(|e| cache_err(&path, e))?;
            }
        }
        Ok(())
    }

    fn copy_tree(&self, from: &Path, into: &Path) -> Result<(), RegistryError> {
        let (mut files, mut bytes) = (0usize, 0u64);
        let mut stack = vec![(from.to_owned(), into.to_owned())];
        while let Some((src, dst)) = stack.pop() {
            std::fs::create_dir_all(&dst).map_err(|e| cache_err(&dst, e))?;
            for entry in std::fs::read_dir(&src).map_err(|e| cache_err(&src, e))? {
                let entry = entry.map_err(|e| cache_err(&src, e))?;
                let kind = entry.file_type().map_err(|e| cache_err(&src, e))?;
                let to = dst.join(entry.file_name());
                if kind.is_dir() {
                    stack.push((entry.path(), to));
                } else if kind.is_file() {
                    files += 1;
                    let len = entry.metadata().map_err(|e| cache_err(&src, e))?.len();
                    bytes = bytes.saturating_add(len);
                    self.within_limits(files, bytes)?;
                    std::fs::copy(entry.path(), &to).map_err(|e| cache_err(&to, e))?;
                }
            }
        }
        Ok(())
    }

    fn within_limits(&self, files: usize, bytes: u64) -> Result<(), RegistryError> {
        if files > self.limits.max_files || bytes > self.limits.max_bytes {
            return Err(RegistryError::new(
                RegistryErrorKind::TooLarge,
                format!(
                    "model artifacts exceed the cache limits ({} files, {} bytes)",
                    self.limits.max_files, self.limits.max_bytes
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_of_a_cached_or_staging_folder() {
        assert_eq!(ModelCache::version_of(Path::new("/c/tiny/3")), Some(3));
        assert_eq!(
            ModelCache::version_of(Path::new("/c/tiny/.staging-12-4242-0")),
            Some(12)
        );
        assert_eq!(ModelCache::version_of(Path::new("/c/tiny/latest")), None);
    }
}
