//! The KEDA external scaler: the service's answers in paused time, and one
//! real gRPC round trip over loopback with the generated client.

#![cfg(feature = "keda")]

use std::collections::HashMap;

use convoy_autoscale::LoadSample;
use convoy_kube::keda::{
    ExternalScaler, ExternalScalerClient, GetMetricsRequest, KedaScaler, KedaSignals,
    ScaledObjectRef, METRIC_NAME,
};
use futures::StreamExt;
use tokio::time::Duration;
use tonic::{Code, Request};

fn trigger(pairs: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "convoy-node".into(),
        namespace: "convoy".into(),
        scaler_metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

fn metrics(scaled: ScaledObjectRef) -> Request<GetMetricsRequest> {
    Request::new(GetMetricsRequest {
        scaled_object_ref: Some(scaled),
        metric_name: String::new(),
    })
}

fn ongoing(n: f64) -> LoadSample {
    LoadSample {
        ongoing: n,
        ..LoadSample::default()
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_and_activity_follow_the_signal_and_stale_data_neither_scales_down_nor_deactivates()
{
    let signals = KedaSignals::new();
    let scaler = KedaScaler::new(signals.clone(), 4.0)
        .unwrap()
        .max_age(Duration::from_secs(10))
        .unwrap();
    let identity = trigger(&[("deployment", "identity")]);

    // Nothing recorded yet: not found, named.
    let e = scaler
        .get_metrics(metrics(identity.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    signals.record("identity", ongoing(18.0));
    let spec = scaler
        .get_metric_spec(Request::new(identity.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs[0].metric_name, METRIC_NAME);
    assert_eq!(spec.metric_specs[0].target_size_float, 4.0);
    let value = scaler
        .get_metrics(metrics(identity.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(value.metric_values[0].metric_value_float, 18.0);
    assert!(
        scaler
            .is_active(Request::new(identity.clone()))
            .await
            .unwrap()
            .into_inner()
            .result
    );

    signals.record("identity", ongoing(0.0));
    assert!(
        !scaler
            .is_active(Request::new(identity.clone()))
            .await
            .unwrap()
            .into_inner()
            .result
    );

    // 11 s without a sample: GetMetrics refuses, IsActive stays true.
    tokio::time::advance(Duration::from_secs(11)).await;
    let e = scaler
        .get_metrics(metrics(identity.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        scaler
            .is_active(Request::new(identity))
            .await
            .unwrap()
            .into_inner()
            .result
    );
}

#[tokio::test(start_paused = true)]
async fn trigger_metadata_is_checked_and_named() {
    let scaler = KedaScaler::new(KedaSignals::new(), 4.0).unwrap();
    let e = scaler
        .get_metric_spec(Request::new(trigger(&[])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("`deployment`"), "{}", e.message());
    for bad in ["0", "-1", "many", "NaN"] {
        let r = trigger(&[("deployment", "identity"), ("targetOngoing", bad)]);
        let e = scaler.get_metric_spec(Request::new(r)).await.unwrap_err();
        assert!(
            e.message().contains("`targetOngoing`"),
            "{bad}: {}",
            e.message()
        );
    }
    let r = trigger(&[("deployment", "identity"), ("targetOngoing", "2.5")]);
    let spec = scaler
        .get_metric_spec(Request::new(r))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs[0].target_size_float, 2.5);
    assert_eq!(spec.metric_specs[0].target_size, 3);

    let e = KedaScaler::new(KedaSignals::new(), 0.0).unwrap_err();
    assert!(e.to_string().contains("`target_ongoing`"), "{e}");
    let e = KedaScaler::new(KedaSignals::new(), 1.0)
        .unwrap()
        .max_age(Duration::ZERO)
        .unwrap_err();
    assert!(e.to_string().contains("`max_age`"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn stream_is_active_sends_the_state_then_each_change() {
    let signals = KedaSignals::new();
    signals.record("identity", ongoing(0.0));
    let scaler = KedaScaler::new(signals.clone(), 4.0).unwrap();
    let mut stream = scaler
        .stream_is_active(Request::new(trigger(&[("deployment", "identity")])))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !stream.next().await.unwrap().unwrap().result,
        "idle at once"
    );
    signals.record("identity", ongoing(3.0));
    assert!(
        stream.next().await.unwrap().unwrap().result,
        "active once load arrives"
    );
    signals.record("identity", ongoing(0.0));
    assert!(!stream.next().await.unwrap().unwrap().result);
}

#[tokio::test]
async fn keda_asks_over_grpc() {
    let signals = KedaSignals::new();
    signals.record("identity", ongoing(7.5));
    let service = KedaScaler::new(signals, 4.0).unwrap().into_service();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = tokio::time::timeout(
        Duration::from_secs(10),
        ExternalScalerClient::connect(format!("http://{addr}")),
    )
    .await
    .expect("connects within 10 s")
    .unwrap();
    let identity = trigger(&[("deployment", "identity")]);
    let value = client
        .get_metrics(metrics(identity.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(value.metric_values[0].metric_value_float, 7.5);
    assert!(
        client
            .is_active(identity.clone())
            .await
            .unwrap()
            .into_inner()
            .result
    );
    let e = client.stream_metric_spec(identity).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::Unimplemented,
        "KEDA falls back to GetMetricSpec"
    );
    server.abort();
}
