//! The server's TOML configuration, in the vocabulary of Ray Serve and
//! Triton: per deployment the model, its versions and their traffic
//! weights (or a rollout plan), batching, the device share and replicas.
//!
//! Everything is checked while the file is read: unknown fields are
//! refused, values out of range fail where they are written, and every
//! error names the field and its line (`toml`'s spans; `tests/config.rs`
//! runs this, a doc test cannot: it runs outside the rpath to libtorch):
//!
//! ```no_run
//! let err = example_multi_model::Config::parse(
//!     "[[deployment]]\nname = \"a\"\nmodel = \"identity\"\nmax_bach_size = 4\n",
//! )
//! .unwrap_err();
//! assert!(err.to_string().contains("line 4"), "{err}");
//! assert!(err.to_string().contains("max_bach_size"), "{err}");
//! ```

mod de;
mod deployment;
mod drift;
mod remote;
mod rollout;
mod server;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use self::de::parse_duration;
pub use self::deployment::{
    Batching, DeploymentConfig, DeviceConfig, DeviceKind, Policy, Replicas, VersionConfig,
};
pub use self::drift::{default_reference, reference_from, DriftSection};
pub use self::remote::{
    EtcdNodes, KubeScale, KubernetesNodes, NodeLists, NodeSource, RemoteAutoscale, RemoteConfig,
};
pub use self::rollout::{DriftPlan, P99Limit, RolloutPlan};
pub use self::server::{RegistryConfig, ServerConfig, UploadLimits};

/// The name of the built-in model that echoes its inputs.
pub const IDENTITY: &str = "identity";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listening addresses, limits, where models live.
    #[serde(default)]
    pub server: ServerConfig,
    /// The models served, each under its own name.
    #[serde(rename = "deployment", default)]
    pub deployments: Vec<Spanned<DeploymentConfig>>,
}

/// A configuration that cannot be used; its message names the field and
/// the line.
#[derive(Debug)]
pub struct ConfigError {
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn at(source: &str, span: std::ops::Range<usize>, message: impl fmt::Display) -> Self {
        let line = source[..span.start.min(source.len())].matches('\n').count() + 1;
        Self {
            message: format!("configuration error at line {line}: {message}"),
        }
    }
}

impl Config {
    /// Reads and checks a TOML file. Relative paths in it (`models_dir`,
    /// `[server.registry] cache_dir`, a deployment's `source` directory,
    /// and their defaults) are taken relative to the file's own folder, as
    /// Prometheus, Envoy and cargo do: the server finds its models whatever
    /// folder it is started from.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            message: format!("{}: {e}", path.display()),
        })?;
        let mut config = Self::parse(&text).map_err(|e| ConfigError {
            message: format!("{}: {e}", path.display()),
        })?;
        let folder = path.parent().unwrap_or(Path::new(""));
        config.resolve_paths(folder);
        Ok(config)
    }

    /// Makes every relative path of the configuration relative to `folder`
    /// instead (what [`Config::load`] does with the file's folder).
    pub fn resolve_paths(&mut self, folder: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = folder.join(&*p);
            }
        };
        resolve(&mut self.server.models_dir);
        if let Some(registry) = &mut self.server.registry {
            resolve(&mut registry.cache_dir);
        }
        for d in &mut self.deployments {
            if let Some(source) = &mut d.get_mut().source {
                resolve(source);
            }
            if let Some(reference) = d
                .get_mut()
                .drift
                .as_mut()
                .and_then(|s| s.config.reference.as_mut())
            {
                resolve(reference);
            }
            drift::default_reference(d.get_mut(), &self.server.models_dir);
        }
    }

    /// Parses and checks TOML text. Relative paths stay as written
    /// (relative to the working directory); see [`Config::resolve_paths`].
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => ConfigError::at(text, span, e.message()),
            None => ConfigError {
                message: format!("configuration error: {}", e.message()),
            },
        })?;
        for (i, d) in config.deployments.iter().enumerate() {
            if config.deployments[..i]
                .iter()
                .any(|e| e.get_ref().name == d.get_ref().name)
            {
                return Err(ConfigError::at(
                    text,
                    d.span(),
                    format!("deployment.name: {:?} appears twice", d.get_ref().name),
                ));
            }
        }
        for d in &config.deployments {
            if d.get_ref().registry.is_some() && config.server.registry.is_none() {
                return Err(ConfigError::at(
                    text,
                    d.span(),
                    format!(
                        "deployment {:?}: a models:/ source needs [server.registry] uri = \"http://host:port\"",
                        d.get_ref().name
                    ),
                ));
            }
        }
        if config.deployments.is_empty() {
            return Err(ConfigError {
                message: "configuration error: no [[deployment]]".into(),
            });
        }
        Ok(config)
    }

    /// The deployments, without their spans.
    pub fn deployments(&self) -> impl Iterator<Item = &DeploymentConfig> {
        self.deployments.iter().map(|d| d.get_ref())
    }
}
