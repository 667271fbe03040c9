//! `[deployment.drift]`: production drift monitoring of a deployment
//! (convoy-drift): the window, the sample, Evidently's tests and thresholds,
//! the reference, the webhook.
//!
//! ```toml
//! [deployment.drift]
//! window = "60s"          # one test per window
//! sample_size = 1000      # rows kept per window (uniform reservoir sample)
//! min_samples = 30        # fewer rows: the window is not tested
//! drift_share = 0.5       # dataset drift from this share of drifted columns
//! # stattest / num_stattest / cat_stattest = "ks" | "wasserstein" | "chisquare" | "jensenshannon" | "z"
//! # threshold / num_threshold / cat_threshold = 0.05
//! # reference = "drift_reference.json"   # default: the one the model's manifest names
//! # webhook = "http://retrain.internal:8080/hooks/drift"
//! ```

use std::path::Path;
use std::sync::Arc;

use convoy_drift::DriftConfig;
use parking_lot::Mutex;
use serde::{Deserialize, Deserializer};

use super::DeploymentConfig;
use crate::drift::DriftMonitor;

/// A deployment's `[deployment.drift]` section and, once started, its
/// monitor (shared by the deployment's versions and by every clone of the
/// configuration).
#[derive(Debug, Clone)]
pub struct DriftSection {
    /// The settings as written (paths resolved against the file's folder).
    pub config: DriftConfig,
    monitor: Arc<Mutex<Option<DriftMonitor>>>,
}

impl DriftSection {
    /// A section with these settings, not started.
    pub fn new(config: DriftConfig) -> Self {
        Self {
            config,
            monitor: Arc::default(),
        }
    }

    /// The running monitor, if the deployment has started it.
    pub fn monitor(&self) -> Option<DriftMonitor> {
        self.monitor.lock().clone()
    }

    /// The monitor, started by `start` on the first call.
    pub fn monitor_or_start(
        &self,
        start: impl FnOnce(&DriftConfig) -> Result<DriftMonitor, tower::BoxError>,
    ) -> Result<DriftMonitor, tower::BoxError> {
        let mut slot = self.monitor.lock();
        if let Some(m) = &*slot {
            return Ok(m.clone());
        }
        let m = start(&self.config)?;
        *slot = Some(m.clone());
        Ok(m)
    }
}

impl<'de> Deserialize<'de> for DriftSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DriftConfig::deserialize(d).map(DriftSection::new)
    }
}

/// Fills in `drift.reference` when the section leaves it out: the
/// reference the first version's manifest names (`drift_reference`). A
/// registry source's versions are not known until it is resolved: the
/// server fills its reference from the downloaded version
/// ([`reference_from`]).
pub fn default_reference(d: &mut DeploymentConfig, models_dir: &Path) {
    if d.registry.is_some() {
        return;
    }
    let Some(version) = d.versions.first().map(|v| v.name.clone()) else {
        return;
    };
    let dir = d.version_dir(models_dir, &version);
    reference_from(d, &dir);
}

/// Fills in `drift.reference`, when `d` has a drift section that leaves it
/// out, with the reference the manifest in `dir` names (`drift_reference`,
/// relative to `dir`).
pub fn reference_from(d: &mut DeploymentConfig, dir: &Path) {
    let Some(section) = &mut d.drift else { return };
    if section.config.reference.is_some() {
        return;
    }
    let named = std::fs::read_to_string(dir.join("model.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|m| m.get("drift_reference")?.as_str().map(str::to_owned));
    section.config.reference = named.map(|file| dir.join(file));
}
