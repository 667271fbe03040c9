//! The HTTP side: loopback check, client, bodies, the HTTP target and one
//! exchange.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::config::LoadConfig;
use crate::error::LoadError;
use crate::payload::Payloads;
use crate::run::{BoxFuture, Target};

/// Most bytes of a response body that are read; the rest is an error.
const MAX_BODY_BYTES: usize = 16 << 20;

/// Checks that `uri` is plain `http` to a loopback address (`127.0.0.0/8`,
/// `::1` or `localhost`).
pub fn ensure_loopback(uri: &Uri) -> Result<(), LoadError> {
    let err = |why: &str| Err(LoadError::new(format!("{uri}: {why}")));
    if uri.scheme_str() != Some("http") {
        return err("only http:// URIs are supported");
    }
    let Some(host) = uri.host() else {
        return err("the URI has no host");
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(());
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Ok(()),
        _ => err("loadgen only targets loopback addresses (127.0.0.1, ::1, localhost)"),
    }
}

/// A JSON body `{"inputs":[...]}` with `width` numbers drawn from a RNG
/// seeded with `seed`, in `[-1, 1)`.
pub fn random_inputs_body(width: usize, seed: u64) -> Bytes {
    let mut rng = StdRng::seed_from_u64(seed);
    let inputs: Vec<f32> = (0..width).map(|_| rng.random_range(-1.0..1.0)).collect();
    Bytes::from(serde_json::to_vec(&serde_json::json!({ "inputs": inputs })).expect("numbers"))
}

/// The HTTP client the runs use (HTTP/1.1, keep-alive, no TLS).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client with room for `connections` idle keep-alive connections.
pub fn http_client(connections: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build(connector)
}

/// Sends a `GET` to a loopback `uri` and returns the body if the status is 2xx.
pub async fn get_body(client: &HttpClient, uri: &Uri) -> Result<Bytes, LoadError> {
    ensure_loopback(uri)?;
    let req = Request::get(uri.clone())
        .body(Full::new(Bytes::new()))
        .map_err(|e| LoadError::new(e.to_string()))?;
    send_http(client, req, Duration::from_secs(10))
        .await
        .map_err(|kind| LoadError::new(format!("GET {uri}: {kind}")))
}

/// HTTP requests to one URI with [`Payloads`] in turn.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    client: HttpClient,
    uri: Uri,
    method: Method,
    payloads: Payloads,
    timeout: Duration,
}

impl HttpTarget {
    /// The target of `config` (its URI, method and bodies) on `client`.
    pub fn new(client: HttpClient, config: &LoadConfig) -> Result<Self, LoadError> {
        ensure_loopback(&config.uri)?;
        Ok(Self {
            client,
            uri: config.uri.clone(),
            method: config.method.clone(),
            payloads: config.payloads.clone(),
            timeout: config.request_timeout,
        })
    }
}

impl Target for HttpTarget {
    fn send(&self, seq: u64) -> BoxFuture<Result<(), String>> {
        let payload = self.payloads.get(seq);
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone());
        if let Some(ct) = &payload.content_type {
            builder = builder.header(hyper::header::CONTENT_TYPE, ct.clone());
        }
        for (name, value) in &payload.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        let req = builder.body(Full::new(payload.body.clone()));
        let client = self.client.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let req = req.map_err(|_| "request".to_owned())?;
            send_http(&client, req, timeout).await.map(drop)
        })
    }
}

/// One HTTP exchange; `Err` holds the error kind used as a report key.
pub async fn send_http(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Bytes, String> {
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            if e.is_connect() {
                "connect".to_owned()
            } else {
                "transport".to_owned()
            }
        })?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|_| "body".to_owned())?
            .to_bytes();
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("http {}", status.as_u16()))
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err("timeout".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        for ok in [
            "http://127.0.0.1:3000/x",
            "http://127.8.0.1/",
            "http://[::1]:80/",
            "http://localhost:1/",
        ] {
            assert_eq!(ensure_loopback(&ok.parse().unwrap()), Ok(()), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/",
            "http://example.com/",
            "https://127.0.0.1/",
            "http://0.0.0.0:3000/",
            "/relative",
        ] {
            assert!(ensure_loopback(&bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn body_is_seeded_json() {
        let a = random_inputs_body(16, 1);
        assert_eq!(a, random_inputs_body(16, 1));
        assert_ne!(a, random_inputs_body(16, 2));
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["inputs"].as_array().unwrap().len(), 16);
    }
}
