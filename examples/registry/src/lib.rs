//! Model sources for the multi-model server.
//!
//! A deployment's model comes from a local folder or from an MLflow Model
//! Registry, named the way MLflow users already name models:
//! `models:/<name>/<version>`, `models:/<name>/<stage>` (legacy stages) or
//! `models:/<name>@<alias>` (MLflow's current way to promote).
//!
//! - [`ModelSource`] parses those forms; a malformed one is an error that
//!   says what is wrong.
//! - [`MlflowClient`] resolves them through MLflow's REST API (registered
//!   models, model versions, aliases, latest versions per stage) and
//!   downloads artifacts through the tracking server's artifact proxy. It
//!   also publishes a folder as a new version and promotes by alias or by
//!   stage with `archive_existing_versions`, so a promotion never trips over
//!   "another version is already in Production".
//! - [`ModelCache`] keeps downloaded versions under `<root>/<name>/<version>`,
//!   each downloaded into a staging folder and moved into place only after
//!   its manifest is checked and the caller's verification (load the
//!   TorchScript file, run a warm-up forward) passed.
//! - [`Watcher`] polls a stage or alias and announces a new version once it
//!   is verified ([`RegistryEvent::NewVersion`]); a version that fails is
//!   refused once ([`RegistryEvent::Rejected`]) while the current one keeps
//!   serving, and a registry that goes away only pauses the watching
//!   ([`RegistryEvent::Unavailable`], then [`RegistryEvent::Recovered`]).
//!
//! ```
//! use example_registry::{ModelSource, Selector, Stage};
//!
//! let source: ModelSource = "models:/ResNet50/Production".parse().unwrap();
//! assert_eq!(
//!     source,
//!     ModelSource::Mlflow { name: "ResNet50".into(), selector: Selector::Stage(Stage::Production) }
//! );
//! assert!(source.is_moving());
//! assert!("models:/ResNet50/latest".parse::<ModelSource>().is_err());
//! ```

mod cache;
mod client;
mod error;
mod uri;
mod watcher;

pub use cache::{check_manifest, CacheLimits, ModelCache, Verify};
pub use client::{ArtifactFile, MlflowClient, ModelVersion};
pub use error::{RegistryError, RegistryErrorKind};
pub use uri::{ModelSource, Selector, Stage};
pub use watcher::{RegistryEvent, Watcher, WatcherHandle};
