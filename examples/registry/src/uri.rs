//! Model sources as users write them in the server's config.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::RegistryError;

/// A legacy MLflow registry stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `None`: not in any stage.
    None,
    /// `Staging`.
    Staging,
    /// `Production`.
    Production,
    /// `Archived`.
    Archived,
}

impl Stage {
    /// MLflow's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "None",
            Stage::Staging => "Staging",
            Stage::Production => "Production",
            Stage::Archived => "Archived",
        }
    }

    /// Parses a stage name, ignoring case as MLflow does.
    pub fn parse(s: &str) -> Option<Stage> {
        [
            Stage::None,
            Stage::Staging,
            Stage::Production,
            Stage::Archived,
        ]
        .into_iter()
        .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

/// Which version of a registered model a `models:/` URI names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// `models:/<name>/<version>`: one fixed version.
    Version(u64),
    /// `models:/<name>/<stage>`: the newest version in a legacy stage.
    Stage(Stage),
    /// `models:/<name>@<alias>`: the version an alias points at (MLflow's
    /// current way to promote).
    Alias(String),
}

/// Where a deployment's model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelSource {
    /// A directory holding `model.json` and the TorchScript file.
    Path(PathBuf),
    /// A registered model in an MLflow Model Registry.
    Mlflow {
        /// The registered model's name.
        name: String,
        /// Which of its versions.
        selector: Selector,
    },
}

impl ModelSource {
    /// Whether the source can move to another version (a stage or alias),
    /// so a watcher should follow it.
    pub fn is_moving(&self) -> bool {
        matches!(
            self,
            ModelSource::Mlflow {
                selector: Selector::Stage(_) | Selector::Alias(_),
                ..
            }
        )
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.contains('@') && name.len() <= 256
}

impl FromStr for ModelSource {
    type Err = RegistryError;

    /// `models:/<name>/<version>`, `models:/<name>/<stage>`,
    /// `models:/<name>@<alias>`, or anything else as a local path
    /// (optionally `file://`).
    fn from_str(s: &str) -> Result<Self, RegistryError> {
        let Some(rest) = s.strip_prefix("models:/") else {
            let path = s.strip_prefix("file://").unwrap_or(s);
            if path.is_empty() {
                return Err(RegistryError::invalid_uri(s, "an empty path"));
            }
            return Ok(ModelSource::Path(PathBuf::from(path)));
        };
        if let Some((name, alias)) = rest.split_once('@') {
            if !valid_name(name) {
                return Err(RegistryError::invalid_uri(
                    s,
                    "no valid model name before '@'",
                ));
            }
            if alias.is_empty() || alias.contains('/') || alias.contains('@') {
                return Err(RegistryError::invalid_uri(s, "no valid alias after '@'"));
            }
            return Ok(ModelSource::Mlflow {
                name: name.to_owned(),
                selector: Selector::Alias(alias.to_owned()),
            });
        }
        let Some((name, which)) = rest.split_once('/') else {
            return Err(RegistryError::invalid_uri(
                s,
                "expected models:/<name>/<version or stage> or models:/<name>@<alias>",
            ));
        };
        if !valid_name(name) {
            return Err(RegistryError::invalid_uri(s, "no valid model name"));
        }
        let selector = if let Ok(v) = which.parse::<u64>() {
            if v == 0 {
                return Err(RegistryError::invalid_uri(s, "versions start at 1"));
            }
            Selector::Version(v)
        } else if let Some(stage) = Stage::parse(which) {
            Selector::Stage(stage)
        } else {
            return Err(RegistryError::invalid_uri(
                s,
                "after the name comes a version number or a stage (None, Staging, Production, Archived)",
            ));
        };
        Ok(ModelSource::Mlflow {
            name: name.to_owned(),
            selector,
        })
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Path(p) => write!(f, "{}", p.display()),
            ModelSource::Mlflow { name, selector } => match selector {
                Selector::Version(v) => write!(f, "models:/{name}/{v}"),
                Selector::Stage(s) => write!(f, "models:/{name}/{}", s.as_str()),
                Selector::Alias(a) => write!(f, "models:/{name}@{a}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlflow(name: &str, selector: Selector) -> ModelSource {
        ModelSource::Mlflow {
            name: name.into(),
            selector,
        }
    }

    #[test]
    fn every_form_parses_and_prints_back() {
        let cases = [
            (
                "models:/ResNet50/3",
                mlflow("ResNet50", Selector::Version(3)),
            ),
            (
                "models:/ResNet50/Production",
                mlflow("ResNet50", Selector::Stage(Stage::Production)),
            ),
            (
                "models:/ResNet50@champion",
                mlflow("ResNet50", Selector::Alias("champion".into())),
            ),
        ];
        for (text, want) in cases {
            let got: ModelSource = text.parse().unwrap();
            assert_eq!(got, want);
            assert_eq!(got.to_string(), text);
        }
        assert_eq!(
            "models:/m/staging".parse::<ModelSource>().unwrap(),
            mlflow("m", Selector::Stage(Stage::Staging))
        );
        assert_eq!(
            "models/resnet50/1".parse::<ModelSource>().unwrap(),
            ModelSource::Path("models/resnet50/1".into())
        );
        assert!(mlflow("m", Selector::Alias("a".into())).is_moving());
        assert!(!mlflow("m", Selector::Version(1)).is_moving());
    }

    #[test]
    fn malformed_uris_say_what_is_wrong() {
        for (text, hint) in [
            ("models:/", "expected"),
            ("models:/ResNet50", "expected"),
            ("models:/ResNet50/0", "start at 1"),
            ("models:/ResNet50/latest", "version number or a stage"),
            ("models:/@champion", "model name"),
            ("models:/m@", "alias"),
            ("models://3", "model name"),
            ("", "empty path"),
        ] {
            let err = text.parse::<ModelSource>().unwrap_err().to_string();
            assert!(err.contains(hint), "{text:?}: {err}");
            assert!(err.contains(text), "{text:?}: {err}");
        }
    }
}
