//! The test repository: `identity` (version 1) echoes every input as an
//! output of the same name, and has a rollout among its metadata's
//! parameters; `slow` answers after an hour; `busy` is always
//! overloaded; `cold` is never ready; `deadline` answers the
//! milliseconds left to the request's deadline (-1 without one).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use example_kserve::{
    BoxFuture, Error, InferRequest, InferResponse, ModelMetadata, Parameters, Repository,
    ServerMetadata, TensorMetadata,
};
use example_tensor::{DataType, NamedTensor, Tensor, TensorData};

#[derive(Debug, Default)]
pub struct TestRepo;

pub fn repo() -> Arc<TestRepo> {
    Arc::new(TestRepo)
}

fn check(name: &str, version: Option<&str>) -> Result<(), Error> {
    if !["identity", "slow", "busy", "cold", "deadline"].contains(&name) {
        return Err(Error::not_found(format!("unknown model {name:?}")));
    }
    match version {
        None | Some("1") => Ok(()),
        Some(v) => Err(Error::not_found(format!(
            "model {name:?} has no version {v:?}"
        ))),
    }
}

impl Repository for TestRepo {
    fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: "convoy-test".into(),
            version: "0.0.0".into(),
            extensions: vec!["binary_tensor_data".into()],
        }
    }

    fn live(&self) -> bool {
        true
    }

    fn ready(&self) -> bool {
        true
    }

    fn model_metadata(&self, name: &str, version: Option<&str>) -> Result<ModelMetadata, Error> {
        check(name, version)?;
        let t = |n: &str| TensorMetadata {
            name: n.into(),
            datatype: DataType::Fp32,
            shape: vec![-1, -1],
        };
        Ok(ModelMetadata {
            name: name.into(),
            versions: vec!["1".into()],
            platform: "convoy_test".into(),
            inputs: vec![t("INPUT0")],
            outputs: vec![t("INPUT0")],
        })
    }

    fn model_parameters(&self, name: &str, version: Option<&str>) -> Result<Parameters, Error> {
        check(name, version)?;
        let mut parameters = Parameters::new();
        if name == "identity" {
            parameters.insert(
                "rollout".into(),
                serde_json::json!({"state": "progressing", "canary_percent": 25.0}),
            );
        }
        Ok(parameters)
    }

    fn model_ready(&self, name: &str, version: Option<&str>) -> Result<bool, Error> {
        check(name, version)?;
        Ok(name != "cold")
    }

    fn infer(
        &self,
        name: &str,
        version: Option<&str>,
        request: InferRequest,
    ) -> BoxFuture<'static, Result<InferResponse, Error>> {
        let checked = check(name, version);
        let name = name.to_owned();
        Box::pin(async move {
            checked?;
            match name.as_str() {
                "slow" => tokio::time::sleep(Duration::from_secs(3600)).await,
                "busy" => return Err(Error::overloaded("the queue of busy is full")),
                "cold" => return Err(Error::unavailable("cold is not ready")),
                "deadline" => {
                    let remaining_ms = request.deadline.map_or(-1, |d| {
                        d.saturating_duration_since(tokio::time::Instant::now())
                            .as_millis() as i64
                    });
                    let t = Tensor::new(vec![1], TensorData::Int64(vec![remaining_ms])).unwrap();
                    return Ok(InferResponse {
                        model_name: name,
                        outputs: vec![NamedTensor::new("remaining_ms", t)],
                        ..Default::default()
                    });
                }
                _ => {}
            }
            Ok(InferResponse {
                model_name: name,
                model_version: Some("1".into()),
                id: None,
                parameters: request.parameters,
                outputs: request.inputs,
            })
        })
    }
}
