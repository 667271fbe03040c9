//! Configuration types round-trip through serde and reject bad values.

use std::time::Duration;

use convoy_router::balance::{BalanceConfig, LoadMetric};
use convoy_router::rollout::{LatencyCheck, LatencyLimit};
use convoy_router::shadow::ShadowConfig;
use convoy_router::{PickStrategy, RolloutConfig, SplitConfig, StickyStrategy, WhenNotReady};

fn round_trip<T>(value: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    serde_json::from_str(&serde_json::to_string(value).unwrap()).unwrap()
}

#[test]
fn configs_round_trip() {
    let split = SplitConfig {
        name: "resnet".into(),
        pick: PickStrategy::WeightedRandom,
        when_not_ready: WhenNotReady::Spill,
        sticky: StickyStrategy::Rendezvous,
        record_latency: false,
    };
    assert_eq!(round_trip(&split), split);

    let rollout = RolloutConfig {
        latency: Some(LatencyCheck {
            quantile: 0.95,
            limit: LatencyLimit::Absolute(Duration::from_millis(250)),
        }),
        ..RolloutConfig::default()
    };
    assert_eq!(round_trip(&rollout), rollout);

    let shadow = ShadowConfig {
        fraction: 0.05,
        ..ShadowConfig::default()
    };
    assert_eq!(round_trip(&shadow), shadow);

    let balance = BalanceConfig {
        load: LoadMetric::PendingRequests,
        ..BalanceConfig::default()
    };
    assert_eq!(round_trip(&balance), balance);
}

#[test]
fn partial_configs_use_defaults() {
    let split: SplitConfig = serde_json::from_str(r#"{"pick": "weighted_random"}"#).unwrap();
    assert_eq!(split.pick, PickStrategy::WeightedRandom);
    assert_eq!(split.when_not_ready, WhenNotReady::Wait);
    let rollout: RolloutConfig =
        serde_json::from_str(r#"{"stable": "v1", "canary": "v2"}"#).unwrap();
    assert_eq!(rollout.steps, vec![1.0, 5.0, 10.0, 25.0, 50.0, 100.0]);
}
