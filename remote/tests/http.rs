//! The HTTP connector, probe, pool and metrics scraper against real
//! servers on loopback.

mod support;

use std::time::Duration;

use bytes::Bytes;
use convoy_autoscale::SignalSource;
use convoy_remote::{
    Endpoint, HttpConnector, HttpEndpoint, HttpProbe, MetricsScraper, NeverSentPolicy, Pool,
    PoolConfig, RetryConfig, ScrapeConfig, StaticSource,
};
use convoy_router::balance::{BalanceConfig, LoadMetric};
use http_body_util::{BodyExt, Full};
use support::node::Node;
use tokio::time::{sleep, Instant};
use tower::{BoxError, Layer, Service, ServiceExt};

type Req = http::Request<Full<Bytes>>;

fn endpoint(id: &str, node: &Node) -> Endpoint {
    Endpoint::ready(id, node.addr, "1")
}

fn pool(endpoints: Vec<Endpoint>, eject_after: u32) -> Pool<HttpEndpoint<Full<Bytes>>> {
    pool_over(
        endpoints,
        eject_after,
        HttpConnector::http1(Duration::from_secs(1)),
    )
}

fn pool_over(
    endpoints: Vec<Endpoint>,
    eject_after: u32,
    connector: HttpConnector<Full<Bytes>>,
) -> Pool<HttpEndpoint<Full<Bytes>>> {
    Pool::new(
        StaticSource::new(endpoints),
        connector,
        HttpProbe::new("/v2/health/ready", Duration::from_millis(200)),
        PoolConfig {
            eject_after,
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(200),
        },
    )
    .unwrap()
}

fn balance() -> BalanceConfig {
    BalanceConfig {
        load: LoadMetric::PendingRequests,
        ready_timeout: Duration::from_secs(2),
        buffer_capacity: 256,
    }
}

fn infer(i: u32) -> Req {
    http::Request::post("/v2/models/m/infer")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!("{{\"i\":{i}}}"))))
        .unwrap()
}

/// Sends request `i`; returns the node that answered.
async fn send<S>(client: &mut S, i: u32) -> Result<String, BoxError>
where
    S: Service<Req, Response = http::Response<hyper::body::Incoming>, Error = BoxError>,
{
    let rsp = client.ready().await?.call(infer(i)).await?;
    assert_eq!(rsp.status(), http::StatusCode::OK);
    let node = rsp.headers()["x-node"].to_str().unwrap().to_string();
    let body = rsp.into_body().collect().await?.to_bytes();
    assert_eq!(body, Bytes::from(format!("{{\"i\":{i}}}")));
    Ok(node)
}

async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_forwarded_whole_and_spread_over_the_nodes() {
    let a = Node::start("a", "127.0.0.1:0".parse().unwrap()).await;
    let b = Node::start("b", "127.0.0.1:0".parse().unwrap()).await;
    let pool = pool(vec![endpoint("a", &a), endpoint("b", &b)], 5);
    let mut client = pool.balancer::<Req>("1", balance()).unwrap();
    for i in 0..40 {
        send(&mut client, i).await.unwrap();
    }
    assert_eq!(a.served() + b.served(), 40);
    assert!(
        a.served() > 0 && b.served() > 0,
        "a {} b {}",
        a.served(),
        b.served()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_connector_speaks_http2_with_prior_knowledge() {
    let a = Node::start("a", "127.0.0.1:0".parse().unwrap()).await;
    let pool = pool_over(
        vec![endpoint("a", &a)],
        5,
        HttpConnector::grpc(Duration::from_secs(1)),
    );
    let mut client = pool.balancer::<Req>("1", balance()).unwrap();
    for i in 0..5 {
        let rsp = client.ready().await.unwrap().call(infer(i)).await.unwrap();
        assert_eq!(rsp.headers()["x-http-version"], "HTTP/2.0");
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, Bytes::from(format!("{{\"i\":{i}}}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_ejected_its_refused_requests_retried_and_a_probe_brings_it_back() {
    let mut a = Node::start("a", "127.0.0.1:0".parse().unwrap()).await;
    let b = Node::start("b", "127.0.0.1:0".parse().unwrap()).await;
    let pool = pool(vec![endpoint("a", &a), endpoint("b", &b)], 1);
    let balancer = pool.balancer::<Req>("1", balance()).unwrap();
    let mut client = NeverSentPolicy::layer(&RetryConfig::default())
        .unwrap()
        .layer(balancer);
    for i in 0..10 {
        send(&mut client, i).await.unwrap();
    }

    let addr = a.addr;
    a.stop().await;
    // Its idle keep-alive connections were closed by the shutdown; give the
    // client a moment to see that, or a request written on one just as it
    // closed fails as "maybe sent" (rightly not retried).
    sleep(Duration::from_millis(200)).await;
    // Every request still succeeds: a refused connection is retried on b.
    for i in 10..60 {
        assert_eq!(send(&mut client, i).await.unwrap(), "b");
    }
    let ejected = || {
        pool.endpoints()
            .iter()
            .any(|s| s.endpoint.id == "a" && s.ejected)
    };
    eventually("a ejected", Duration::from_secs(5), ejected).await;

    // Back on the same address: the next probe puts it back.
    let a = Node::start("a", addr).await;
    let serving = || {
        pool.endpoints()
            .iter()
            .any(|s| s.endpoint.id == "a" && s.serving)
    };
    eventually("a back", Duration::from_secs(5), serving).await;
    for i in 60..100 {
        send(&mut client, i).await.unwrap();
    }
    assert!(a.served() > 0);
}

fn metrics(in_flight: f64, queued: [f64; 2], completed: u64) -> String {
    format!(
        "# TYPE convoy_node_in_flight_requests gauge\nconvoy_node_in_flight_requests {in_flight}\n\
         # TYPE convoy_batcher_queue_depth gauge\n\
         convoy_batcher_queue_depth{{batcher=\"m/1/0\"}} {}\n\
         convoy_batcher_queue_depth{{batcher=\"m/1/1\"}} {}\n\
         # TYPE convoy_server_requests_total counter\n\
         convoy_server_requests_total{{deployment=\"m\",version=\"1\"}} {completed}\n",
        queued[0], queued[1]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scraper_sums_the_fresh_figures_of_the_replicas() {
    let a = Node::start("a", "127.0.0.1:0".parse().unwrap()).await;
    let mut b = Node::start("b", "127.0.0.1:0".parse().unwrap()).await;
    *a.metrics.lock() = metrics(10.0, [2.0, 1.0], 100);
    *b.metrics.lock() = metrics(4.0, [0.0, 1.0], 7);
    let pool = pool(vec![endpoint("a", &a), endpoint("b", &b)], 5);
    let config = ScrapeConfig {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(200),
        max_age: Duration::from_millis(400),
        ..ScrapeConfig::default()
    };
    let mut scraper = MetricsScraper::for_pool(&pool, config).unwrap();
    eventually("both scraped", Duration::from_secs(5), || {
        scraper.reporting() == 2
    })
    .await;
    let s = scraper.sample(Duration::ZERO).unwrap();
    assert_eq!((s.ongoing, s.queued, s.running), (14.0, 4.0, 10.0));
    assert_eq!(s.replicas_reporting, Some(2));
    // Per replica, by endpoint id (what a scaler ranks replicas by).
    let mut each: Vec<(String, f64)> = scraper
        .ongoing_by_replica()
        .into_iter()
        .map(|(id, _, n)| (id, n))
        .collect();
    each.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(each, [("a".to_string(), 10.0), ("b".to_string(), 4.0)]);
    assert_eq!(s.completions, 0, "the first sample has no previous count");

    *a.metrics.lock() = metrics(10.0, [2.0, 1.0], 130);
    *b.metrics.lock() = metrics(4.0, [0.0, 1.0], 12);
    sleep(Duration::from_millis(200)).await;
    assert_eq!(scraper.sample(Duration::ZERO).unwrap().completions, 35);

    // b stops answering: once its figures are older than max_age, only a counts.
    b.stop().await;
    sleep(Duration::from_millis(600)).await;
    let s = scraper.sample(Duration::ZERO).unwrap();
    assert_eq!((s.ongoing, s.replicas_reporting), (10.0, Some(1)));
    assert_eq!(
        scraper.ongoing_by_replica().len(),
        1,
        "b's stale figures left out"
    );
}
