//! A small client for the parts of MLflow's REST API a model server needs:
//! resolving registered model versions by number, stage or alias, listing
//! and downloading their artifacts through the tracking server's artifact
//! proxy (`mlflow server` serves artifacts by default), and publishing a
//! model directory as a new version (used by the tests and scripts).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{RegistryError, RegistryErrorKind};
use crate::uri::{Selector, Stage};

/// Characters escaped in query values and artifact path segments.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The largest JSON answer accepted from the registry.
const MAX_JSON: usize = 8 << 20;

/// One version of a registered model, as the registry describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVersion {
    /// The registered model's name.
    pub name: String,
    /// The version number.
    pub version: u64,
    /// Where its artifacts live (`mlflow-artifacts:/...`, a path, ...).
    pub source: String,
    /// Its legacy stage (`None`, `Staging`, `Production`, `Archived`).
    pub stage: String,
    /// The run that produced it, if any.
    pub run_id: Option<String>,
    /// `READY` once the registry finished creating it.
    pub status: String,
}

/// A file or folder under an artifact path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    /// Path relative to the listed folder.
    pub path: String,
    /// Whether it is a folder.
    pub is_dir: bool,
    /// Size in bytes (0 for folders).
    pub size: u64,
}

#[derive(Deserialize)]
struct RawVersion {
    name: String,
    version: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    current_stage: Option<String>,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

impl TryFrom<RawVersion> for ModelVersion {
    type Error = RegistryError;

    fn try_from(raw: RawVersion) -> Result<Self, RegistryError> {
        let version = raw.version.parse().map_err(|_| {
            RegistryError::new(
                RegistryErrorKind::Protocol,
                format!(
                    "model {}: version {:?} is not a number",
                    raw.name, raw.version
                ),
            )
        })?;
        Ok(ModelVersion {
            name: raw.name,
            version,
            source: raw.source,
            stage: raw.current_stage.unwrap_or_else(|| "None".into()),
            run_id: raw.run_id.filter(|r| !r.is_empty()),
            status: raw.status.unwrap_or_else(|| "READY".into()),
        })
    }
}

/// A client of one MLflow tracking server (plain HTTP; an optional bearer
/// token as in `MLFLOW_TRACKING_TOKEN`).
#[derive(Clone)]
pub struct MlflowClient {
    base: String,
    token: Option<String>,
    timeout: Duration,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for MlflowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlflowClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl MlflowClient {
    /// A client for the tracking server at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<Self, RegistryError> {
        let base = base.trim_end_matches('/');
        if !base.starts_with("http://") || base.len() <= "http://".len() {
            return Err(RegistryError::new(
                RegistryErrorKind::InvalidUri,
                format!("MLflow tracking URI {base:?}: expected http://host:port"),
            ));
        }
        Ok(Self {
            base: base.to_owned(),
            token: None,
            timeout: Duration::from_secs(30),
            http: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Bounds every request (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The tracking server's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), RegistryError> {
        let url = format!("{}{path_and_query}", self.base);
        let mut req = Request::builder().method(method).uri(&url);
        if !body.is_empty() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(body)).map_err(|e| {
            RegistryError::new(RegistryErrorKind::InvalidUri, format!("{url}: {e}"))
        })?;
        let exchange = async {
            let rsp = self.http.request(req).await.map_err(|e| {
                RegistryError::new(
                    RegistryErrorKind::Unreachable,
                    format!("MLflow at {}: {e}", self.base),
                )
            })?;
            let status = rsp.status();
            let body = Limited::new(rsp.into_body(), limit)
                .collect()
                .await
                .map_err(|e| {
                    let kind = if e.is::<http_body_util::LengthLimitError>() {
                        RegistryErrorKind::TooLarge
                    } else {
                        RegistryErrorKind::Unreachable
                    };
                    RegistryError::new(kind, format!("{url}: {e}"))
                })?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(RegistryError::new(
                RegistryErrorKind::Unreachable,
                format!(
                    "MLflow at {}: no answer within {:?}",
                    self.base, self.timeout
                ),
            )),
        }
    }

    /// A JSON call; errors carry MLflow's own message.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<Value, RegistryError> {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let (status, bytes) = self.send(method, path_and_query, body, MAX_JSON).await?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let code = value["error_code"].as_str().unwrap_or_default();
        let message = value["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        let kind = if status == StatusCode::NOT_FOUND
            || code == "RESOURCE_DOES_NOT_EXIST"
            || message.contains("not found")
        {
            RegistryErrorKind::NotFound
        } else if status.is_server_error() {
            RegistryErrorKind::Unreachable
        } else {
            RegistryErrorKind::Protocol
        };
        Err(RegistryError::new(
            kind,
            format!("{what}: MLflow answered {status}: {message}"),
        ))
    }

    fn version_from(value: &Value, what: &str) -> Result<ModelVersion, RegistryError> {
        let raw: RawVersion = serde_json::from_value(value.clone()).map_err(|e| {
            RegistryError::new(
                RegistryErrorKind::Protocol,
                format!("{what}: unexpected answer from MLflow: {e}"),
            )
        })?;
        raw.try_into()
    }

    /// The version `selector` names. A missing model, version, stage or
    /// alias is a [`RegistryErrorKind::NotFound`] error naming it.
    pub async fn resolve(
        &self,
        name: &str,
        selector: &Selector,
    ) -> Result<ModelVersion, RegistryError> {
        let n = utf8_percent_encode(name, QUERY);
        let version = match selector {
            Selector::Version(v) => {
                let what = format!("model {name:?} version {v}");
                let value = self
                    .call(
                        Method::GET,
                        &format!("/api/2.0/mlflow/model-versions/get?name={n}&version={v}"),
                        None,
                        &what,
                    )
                    .await?;
                Self::version_from(&value["model_version"], &what)?
            }
            Selector::Alias(alias) => {
                let what = format!("model {name:?} alias {alias:?}");
                let a = utf8_percent_encode(alias, QUERY);
                let value = self
                    .call(
                        Method::GET,
                        &format!("/api/2.0/mlflow/registered-models/alias?name={n}&alias={a}"),
                        None,
                        &what,
                    )
                    .await?;
                Self::version_from(&value["model_version"], &what)?
            }
            Selector::Stage(stage) => {
                let what = format!("model {name:?} stage {}", stage.as_str());
                let value = self
                    .call(
                        Method::POST,
                        "/api/2.0/mlflow/registered-models/get-latest-versions",
                        Some(json!({ "name": name, "stages": [stage.as_str()] })),
                        &what,
                    )
                    .await?;
                let versions = value["model_versions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let mut found = versions
                    .iter()
                    .map(|v| Self::version_from(v, &what))
                    .collect::<Result<Vec<_>, _>>()?;
                found.sort_by_key(|v| v.version);
                found.pop().ok_or_else(|| {
                    RegistryError::new(
                        RegistryErrorKind::NotFound,
                        format!(
                            "{what}: no version of {name:?} is in stage {}",
                            stage.as_str()
                        ),
                    )
                })?
            }
        };
        if version.status != "READY" {
            return Err(RegistryError::new(
                RegistryErrorKind::NotFound,
                format!(
                    "model {name:?} version {} is {} in MLflow, not READY",
                    version.version, version.status
                ),
            ));
        }
        Ok(version)
    }

    /// Where a version's artifacts can be downloaded from (MLflow resolves
    /// `runs:/` and logged-model sources to an artifact URI).
    pub async fn download_uri(&self, version: &ModelVersion) -> Result<String, RegistryError> {
        let what = format!(
            "model {:?} version {} download URI",
            version.name, version.version
        );
        let n = utf8_percent_encode(&version.name, QUERY);
        let value = self
            .call(
                Method::GET,
                &format!(
                    "/api/2.0/mlflow/model-versions/get-download-uri?name={n}&version={}",
                    version.version
                ),
                None,
                &what,
            )
            .await?;
        value["artifact_uri"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                RegistryError::new(RegistryErrorKind::Protocol, format!("{what}: missing"))
            })
    }

    fn artifact_path(path: &str) -> String {
        path.split('/')
            .filter(|s| !s.is_empty())
            .map(|s| utf8_percent_encode(s, QUERY).to_string())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The files and folders directly under `path` in the artifact store
    /// (`path` without the `mlflow-artifacts:/` prefix).
    pub async fn list_artifacts(&self, path: &str) -> Result<Vec<ArtifactFile>, RegistryError> {
        let p = utf8_percent_encode(path.trim_matches('/'), QUERY);
        let value = self
            .call(
                Method::GET,
                &format!("/api/2.0/mlflow-artifacts/artifacts?path={p}"),
                None,
                &format!("artifacts under {path:?}"),
            )
            .await?;
        Ok(value["files"]
            .as_array()
            .map(|files| {
                files
                    .iter()
                    .filter_map(|f| {
                        Some(ArtifactFile {
                            path: f["path"].as_str()?.to_owned(),
                            is_dir: f["is_dir"].as_bool().unwrap_or(false),
                            size: f["file_size"].as_u64().unwrap_or(0),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Downloads one artifact file, refusing more than `limit` bytes.
    pub async fn download_artifact(
        &self,
        path: &str,
        limit: usize,
    ) -> Result<Bytes, RegistryError> {
        let url = format!(
            "/api/2.0/mlflow-artifacts/artifacts/{}",
            Self::artifact_path(path)
        );
        let (status, body) = self.send(Method::GET, &url, Bytes::new(), limit).await?;
        if status.is_success() {
            return Ok(body);
        }
        let kind = if status == StatusCode::NOT_FOUND {
            RegistryErrorKind::NotFound
        } else if status.is_server_error() {
            RegistryErrorKind::Unreachable
        } else {
            RegistryErrorKind::Protocol
        };
        Err(RegistryError::new(
            kind,
            format!("artifact {path:?}: MLflow answered {status}"),
        ))
    }

    /// Uploads one artifact file (`path` without the `mlflow-artifacts:/`
    /// prefix).
    pub async fn upload_artifact(&self, path: &str, data: Bytes) -> Result<(), RegistryError> {
        let url = format!(
            "/api/2.0/mlflow-artifacts/artifacts/{}",
            Self::artifact_path(path)
        );
        let (status, body) = self.send(Method::PUT, &url, data, MAX_JSON).await?;
        if status.is_success() {
            return Ok(());
        }
        Err(RegistryError::new(
            RegistryErrorKind::Protocol,
            format!(
                "upload of {path:?}: MLflow answered {status}: {}",
                String::from_utf8_lossy(&body)
            ),
        ))
    }

    /// Registers `name` (an existing registered model is fine).
    pub async fn create_registered_model(&self, name: &str) -> Result<(), RegistryError> {
        match self
            .call(
                Method::POST,
                "/api/2.0/mlflow/registered-models/create",
                Some(json!({ "name": name })),
                &format!("register model {name:?}"),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.to_string().contains("RESOURCE_ALREADY_EXISTS")
                    || e.to_string().contains("already exists") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Starts a run in the default experiment; returns its id and artifact
    /// URI.
    pub async fn create_run(&self) -> Result<(String, String), RegistryError> {
        let value = self
            .call(
                Method::POST,
                "/api/2.0/mlflow/runs/create",
                Some(json!({ "experiment_id": "0" })),
                "create run",
            )
            .await?;
        let info = &value["run"]["info"];
        match (info["run_id"].as_str(), info["artifact_uri"].as_str()) {
            (Some(id), Some(uri)) => Ok((id.to_owned(), uri.to_owned())),
            _ => Err(RegistryError::new(
                RegistryErrorKind::Protocol,
                "create run: answer without run_id / artifact_uri",
            )),
        }
    }

    /// Creates a version of `name` from artifacts at `source`.
    pub async fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: Option<&str>,
    ) -> Result<ModelVersion, RegistryError> {
        let mut body = json!({ "name": name, "source": source });
        if let Some(r) = run_id {
            body["run_id"] = json!(r);
        }
        let what = format!("new version of {name:?}");
        let value = self
            .call(
                Method::POST,
                "/api/2.0/mlflow/model-versions/create",
                Some(body),
                &what,
            )
            .await?;
        Self::version_from(&value["model_version"], &what)
    }

    /// Points `alias` at `version`.
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u64,
    ) -> Result<(), RegistryError> {
        self.call(
            Method::POST,
            "/api/2.0/mlflow/registered-models/alias",
            Some(json!({ "name": name, "alias": alias, "version": version.to_string() })),
            &format!("alias {alias:?} of {name:?}"),
        )
        .await
        .map(drop)
    }

    /// Moves `version` to `stage`; with `archive_existing`, the versions
    /// already there move to `Archived` in the same call (so promoting to
    /// Production never conflicts with the current Production version).
    pub async fn transition_stage(
        &self,
        name: &str,
        version: u64,
        stage: Stage,
        archive_existing: bool,
    ) -> Result<(), RegistryError> {
        self.call(
            Method::POST,
            "/api/2.0/mlflow/model-versions/transition-stage",
            Some(json!({
                "name": name,
                "version": version.to_string(),
                "stage": stage.as_str(),
                "archive_existing_versions": archive_existing,
            })),
            &format!("{name:?} version {version} to {}", stage.as_str()),
        )
        .await
        .map(drop)
    }

    /// Publishes every file of `dir` (one level, as exported models are)
    /// as a new version of `name`: a run, its artifacts under `model/`, and
    /// the version pointing at them.
    pub async fn publish_dir(
        &self,
        name: &str,
        dir: &std::path::Path,
    ) -> Result<ModelVersion, RegistryError> {
        self.create_registered_model(name).await?;
        let (run_id, artifact_uri) = self.create_run().await?;
        let root = artifact_uri
            .strip_prefix("mlflow-artifacts:/")
            .ok_or_else(|| {
                RegistryError::new(
                    RegistryErrorKind::Protocol,
                    format!("run artifact URI {artifact_uri:?} is not served by the tracking server (start it with artifact serving)"),
                )
            })?
            .trim_start_matches('/')
            .to_owned();
        let entries = std::fs::read_dir(dir).map_err(|e| {
            RegistryError::new(RegistryErrorKind::Cache, format!("{}: {e}", dir.display()))
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                RegistryError::new(RegistryErrorKind::Cache, format!("{}: {e}", dir.display()))
            })?;
            if !entry.path().is_file() {
                continue;
            }
            let data = tokio::fs::read(entry.path()).await.map_err(|e| {
                RegistryError::new(
                    RegistryErrorKind::Cache,
                    format!("{}: {e}", entry.path().display()),
                )
            })?;
            let file = entry.file_name().to_string_lossy().into_owned();
            self.upload_artifact(&format!("{root}/model/{file}"), Bytes::from(data))
                .await?;
        }
        self.create_model_version(name, &format!("{artifact_uri}/model"), Some(&run_id))
            .await
    }
}
