//! A canary's life: started beside the serving version, its rollout run,
//! and the loser retired.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use convoy_router::rollout::RolloutState;
use convoy_router::{Rollout, SplitHandle};
use tokio::time::Instant;
use tower::{BoxError, Layer};

use super::mirror::{Mirror, Switch};
use crate::config::RolloutPlan;
use crate::deploy::{rollout_config, Backend, Deployment, ItemService, Version};
use crate::model::Forward;

/// The plan of a registry deployment without `[deployment.rollout]`.
pub(crate) fn default_plan() -> RolloutPlan {
    toml::from_str("steps = [10, 50, 100]").expect("the default plan is valid")
}

/// Rolls version `name` (`model`) out beside the serving version of `d`
/// and waits until it is promoted (the old version retired) or rolled back
/// (the new one retired). Requests already admitted by a retired version
/// finish first (at most `drain`).
pub(crate) async fn roll_out(
    d: &Deployment,
    name: &str,
    model: Arc<dyn Forward>,
    drain: Duration,
) -> Result<RolloutState, BoxError> {
    let plan = d.config.rollout.clone().unwrap_or_else(default_plan);
    let stable = d
        .versions()
        .first()
        .cloned()
        .ok_or_else(|| format!("deployment {}: no serving version", d.config.name))?;
    let label = format!("{}/{name}", d.config.name);
    d.status.begin(&stable.name, name, plan.steps.len());
    let prepared = prepare(d, &plan, &stable, name, model, drain).await;
    let (rollout, drift) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            d.status.fail(format!("{label} did not start: {e}"));
            return Err(e);
        }
    };
    let handle = rollout.start();
    d.status.attach(handle.clone());
    let end = handle.finished().await;
    if let Some(m) = &drift {
        // No more mirrors: the stable version may go now.
        m.on.store(false, Ordering::Relaxed);
        *m.target.write() = None;
    }
    match end {
        RolloutState::Promoted => d.retire(&stable.name, drain).await?,
        _ => d.retire(name, drain).await?,
    }
    Ok(end)
}

/// Starts the canary (at weight 0, with its drift mirror if the plan has
/// one) and waits for its first ready replica: the rollout to start.
async fn prepare(
    d: &Deployment,
    plan: &RolloutPlan,
    stable: &Version,
    name: &str,
    model: Arc<dyn Forward>,
    drain: Duration,
) -> Result<(Rollout<SplitHandle<Backend>>, Option<Mirror>), BoxError> {
    let label = format!("{}/{name}", d.config.name);
    let config = rollout_config(plan, stable.name.to_string(), name.to_string());
    let mut rollout =
        Rollout::new(d.handle.clone(), config)?.on_event(d.status.recorder(&d.config.name));
    let drift = match &plan.drift {
        Some(p) => Some(Mirror::new(p, d.kind, &label, stable.service.clone())?),
        None => None,
    };
    if let Some(m) = &drift {
        rollout = rollout.drift(m.monitor.clone());
    }
    let canary = d.add_version(name, model, |service| match &drift {
        Some(m) => ItemService::new(Switch {
            mirrored: m.layer.layer(service.clone()),
            plain: service,
            on: Arc::clone(&m.on),
            chosen: None,
        }),
        None => ItemService::new(service),
    })?;
    // Traffic moves only once the new version has a ready replica.
    let started = Instant::now();
    while convoy_autoscale::Scaler::replicas(&canary.replicas).ready == 0 {
        if started.elapsed() > Duration::from_secs(60) {
            d.retire(name, drain).await?;
            return Err("no ready replica within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((rollout, drift))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use example_kserve::{rest_routes, Limits};
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;
    use crate::model::Identity;
    use crate::v2::V2;
    use crate::{Config, Server};

    /// One identity deployment, one version ("1"), no rollout plan: a
    /// rollout gets the default plan (steps 10, 50, 100; 50 canary
    /// samples per verdict), so without traffic it stays at its first step.
    const ONE_VERSION: &str = "[[deployment]]\nname = \"m\"\nmodel = \"identity\"\n\
                               [deployment.device]\nkind = \"cpu\"\n";

    async fn metadata(app: &axum::Router, uri: &str) -> Value {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let answer = app.clone().oneshot(request).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{uri}");
        let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// Waits (at most 10 s) until `d`'s rollout is in `state`.
    async fn until_state(d: &Deployment, state: &str) {
        for _ in 0..2000 {
            if d.status.summary().is_some_and(|s| s.state == state) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no rollout {state} within 10 s: {:?}", d.status.summary());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_v2_metadata_shows_both_versions_and_the_rollout_while_it_runs() {
        let server = Server::start(Config::parse(ONE_VERSION).unwrap())
            .await
            .unwrap();
        let app = rest_routes(Arc::new(V2(Arc::clone(&server))), Limits::default());
        let before = metadata(&app, "/v2/models/m").await;
        assert_eq!(before["versions"], json!(["1"]));
        assert!(before.get("parameters").is_none(), "{before:#}");

        let d = Arc::clone(&server.deployments[0]);
        let rolling = tokio::spawn(async move {
            let model = Arc::new(Identity::new(Duration::ZERO));
            roll_out(&d, "2", model, Duration::from_secs(5)).await
        });
        let d = &server.deployments[0];
        until_state(d, "progressing").await;
        for uri in ["/v2/models/m", "/v2/models/m/versions/2"] {
            let during = metadata(&app, uri).await;
            assert_eq!(during["versions"], json!(["1", "2"]), "{uri}");
            let rollout = &during["parameters"]["rollout"];
            assert_eq!(rollout["state"], "progressing", "{during:#}");
            assert_eq!(rollout["stable"], "1");
            assert_eq!(rollout["canary"], "2");
            assert_eq!(rollout["step"], 0);
            assert_eq!(rollout["steps"], 3);
            assert_eq!(rollout["canary_percent"], 10.0);
            assert!(rollout["started_unix_ms"].as_u64().unwrap() > 0);
            assert!(rollout.get("events").is_none(), "{during:#}");
            // The same names and figures as /v1/models' view, less its events.
            let v1 = serde_json::to_value(d.status.rollout().unwrap().summary).unwrap();
            assert_eq!(rollout["state"], v1["state"]);
            assert_eq!(rollout["canary_percent"], v1["canary_percent"]);
        }

        // Promoted: the old version is retired and the metadata says so.
        d.status.handle().unwrap().promote().await.unwrap();
        assert_eq!(rolling.await.unwrap().unwrap(), RolloutState::Promoted);
        let after = metadata(&app, "/v2/models/m").await;
        assert_eq!(after["versions"], json!(["2"]));
        let rollout = &after["parameters"]["rollout"];
        assert_eq!(rollout["state"], "promoted", "{after:#}");
        assert_eq!(rollout["canary_percent"], 100.0);
        assert_eq!(rollout["step"], Value::Null);
        assert!(rollout["last_reason"]
            .as_str()
            .unwrap()
            .contains("operator"));

        // A canary that cannot start: the rollout is over before any traffic.
        let model = Arc::new(Identity::new(Duration::ZERO));
        let refused = roll_out(d, "2", model, Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        let failed = metadata(&app, "/v2/models/m").await;
        assert_eq!(failed["versions"], json!(["2"]));
        let rollout = &failed["parameters"]["rollout"];
        assert_eq!(rollout["state"], "failed", "{failed:#}");
        assert_eq!(rollout["canary_percent"], 0.0);
        let reason = rollout["last_reason"].as_str().unwrap();
        assert!(
            reason.contains("did not start") && reason.contains(&refused),
            "{reason}"
        );
        for d in &server.deployments {
            d.shutdown();
        }
    }
}
