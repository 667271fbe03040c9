//! The KServe Open Inference Protocol v2 over the server's deployments:
//! [`example_kserve::Repository`] implemented on [`Server`], so the
//! protocol crate's REST routes and gRPC service (Triton's clients) reach
//! every deployment through the same crates as the v1 routes.
//!
//! A model's metadata lists every version the deployment serves: while a
//! rollout runs, the stable version first and the canary beside it. Over
//! REST it also carries the rollout (the one running, or the last one) as
//! `parameters.rollout`: `/v1/models`' rollout view without its events
//! ([`RolloutSummary`](crate::rollout::RolloutSummary)). A deployment that
//! never rolled out has no `parameters`. gRPC's `ModelMetadataResponse` has
//! no field for it: over gRPC only the versions show a rollout.

use std::sync::Arc;

use example_kserve::{
    BoxFuture, Error, InferRequest, InferResponse, ModelMetadata, Parameters, Repository,
    ServerMetadata, TensorMetadata,
};
use example_tensor::DataType;

use crate::deploy::{Deployment, Route, Tensors};
use crate::model::{Kind, TensorMeta};
use crate::Server;

/// The server's deployments as a KServe v2 model repository.
#[derive(Debug, Clone)]
pub struct V2(pub Arc<Server>);

fn metadata(list: Vec<TensorMeta>) -> Vec<TensorMetadata> {
    list.into_iter()
        .filter_map(|t| {
            Some(TensorMetadata {
                datatype: DataType::parse(&t.datatype)?,
                name: t.name,
                shape: t.shape,
            })
        })
        .collect()
}

impl V2 {
    fn deployment(&self, name: &str, version: Option<&str>) -> Result<&Deployment, Error> {
        let d = self
            .0
            .deployment(name)
            .ok_or_else(|| Error::not_found(format!("no model {name:?}")))?;
        if let Some(v) = version {
            if d.version(v).is_none() {
                return Err(Error::not_found(format!(
                    "model {name:?} has no version {v:?}"
                )));
            }
        }
        Ok(d)
    }

    fn meta(d: &Deployment) -> ModelMetadata {
        let all = d.versions();
        let model = &all[0].model;
        ModelMetadata {
            name: d.config.name.clone(),
            versions: all.iter().map(|v| v.name.to_string()).collect(),
            platform: if d.kind == Kind::Identity {
                "convoy_identity".into()
            } else {
                "pytorch_torchscript".into()
            },
            inputs: metadata(model.inputs()),
            outputs: metadata(model.outputs()),
        }
    }
}

impl Repository for V2 {
    fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: "convoy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["binary_tensor_data".into()],
        }
    }

    fn live(&self) -> bool {
        true
    }

    fn ready(&self) -> bool {
        self.0.ready()
    }

    fn model_metadata(&self, name: &str, version: Option<&str>) -> Result<ModelMetadata, Error> {
        Ok(Self::meta(self.deployment(name, version)?))
    }

    fn model_parameters(&self, name: &str, version: Option<&str>) -> Result<Parameters, Error> {
        let d = self.deployment(name, version)?;
        let mut parameters = Parameters::new();
        if let Some(rollout) = d.status.summary() {
            let rollout = serde_json::to_value(rollout)
                .map_err(|e| Error::internal(format!("cannot encode the rollout: {e}")))?;
            parameters.insert("rollout".into(), rollout);
        }
        Ok(parameters)
    }

    fn model_ready(&self, name: &str, version: Option<&str>) -> Result<bool, Error> {
        let d = self.deployment(name, version)?;
        Ok(match version {
            Some(v) => d
                .version(v)
                .is_some_and(|v| convoy_autoscale::Scaler::replicas(&v.replicas).ready > 0),
            None => d.ready(),
        })
    }

    fn infer(
        &self,
        name: &str,
        version: Option<&str>,
        request: InferRequest,
    ) -> BoxFuture<'static, Result<InferResponse, Error>> {
        let server = Arc::clone(&self.0);
        let (name, version) = (name.to_string(), version.map(str::to_string));
        Box::pin(async move {
            let v2 = V2(Arc::clone(&server));
            let d = v2.deployment(&name, version.as_deref())?;
            let id = request
                .id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(crate::error::new_request_id);
            let route = Route::new().pinned(version).deadline(request.deadline);
            let answer = d
                .call(Tensors::new(request.inputs), route)
                .await
                .map_err(|e| crate::error::to_v2(&e, &id))?;
            Ok(InferResponse {
                model_name: name,
                model_version: Some(answer.version.to_string()),
                outputs: answer.output,
                ..Default::default()
            })
        })
    }
}
