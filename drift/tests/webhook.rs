//! The webhook: once per transition into drift, retried a bounded number of
//! times, against a small HTTP server on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use convoy_drift::stats::{ColumnKind, ColumnValues};
use convoy_drift::{DriftSettings, Monitor, Reference, ReferenceColumn, Value, WebhookSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers every request with the next status of `statuses` (the last one
/// repeated), counting requests whose body is a drift report.
async fn hook_server(statuses: Vec<u16>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/drift", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = c.fetch_add(1, Ordering::SeqCst);
            let status = statuses[n.min(statuses.len() - 1)];
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read headers and the body (bounded).
                while buf.len() < 1 << 20 {
                    let Ok(k) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                    let text = String::from_utf8_lossy(&buf);
                    if let Some(h) = text.find("\r\n\r\n") {
                        let len = text[..h]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= h + 4 + len {
                            assert!(text[h + 4..].contains("\"dataset_drift\":true"));
                            break;
                        }
                    }
                }
                let reason = if status == 200 { "OK" } else { "Error" };
                let resp = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, count)
}

fn settings(url: &str, attempts: u32) -> DriftSettings {
    DriftSettings {
        window: Duration::from_millis(300),
        sample_size: 100,
        min_samples: 30,
        drift_share: 0.5,
        per_column: vec![(None, None)],
        reference: Reference {
            columns: vec![ReferenceColumn {
                name: "x".into(),
                kind: ColumnKind::Numerical,
                values: ColumnValues::Numerical((0..200).map(f64::from).collect()),
            }],
        },
        webhook: Some(WebhookSettings {
            url: url.parse().unwrap(),
            attempts,
            timeout: Duration::from_secs(2),
        }),
    }
}

async fn feed(monitor: &convoy_drift::DriftHandle, shift: f64) {
    for i in 0..100 {
        monitor.observe(|| vec![Value::Num(f64::from(i * 2) + shift)]);
    }
}

async fn wait_for(count: &AtomicUsize, want: usize) {
    for _ in 0..100 {
        if count.load(Ordering::SeqCst) >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the hook was called {} times in 5 s, not {want}",
        count.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn fires_once_per_transition_into_drift() {
    let (url, count) = hook_server(vec![200]).await;
    let monitor = Monitor::start("m", settings(&url, 3));
    // Drifted windows until the monitor says so, then two more: one
    // notification. (Real time: windows close on their own clock, so each
    // phase feeds until its verdict, a bounded number of times.)
    feed_until(&monitor, 1000.0, true).await;
    for _ in 0..2 {
        feed(&monitor, 1000.0).await;
        tokio::time::sleep(Duration::from_millis(320)).await;
    }
    wait_for(&count, 1).await;
    assert!(monitor.drifted());
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Back to normal, then drifted again: a second notification.
    feed_until(&monitor, 0.0, false).await;
    feed_until(&monitor, 1000.0, true).await;
    wait_for(&count, 2).await;
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

/// Feeds rows shifted by `shift` every 100 ms until the monitor's verdict
/// is `drifted` (at most 5 s).
async fn feed_until(monitor: &convoy_drift::DriftHandle, shift: f64, drifted: bool) {
    for _ in 0..50 {
        if monitor.drifted() == drifted
            && monitor
                .latest()
                .is_some_and(|r| r.tested && r.dataset_drift == drifted)
        {
            return;
        }
        feed(monitor, shift).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the verdict never became drifted = {drifted}: {:?}",
        monitor.latest()
    );
}

#[tokio::test]
async fn retries_are_bounded() {
    // Fails twice, then would succeed: with 2 attempts it is given up.
    let (url, count) = hook_server(vec![500, 500, 200]).await;
    let monitor = Monitor::start("m", settings(&url, 2));
    feed(&monitor, 1000.0).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    wait_for(&count, 2).await;
    // Well past the backoff: no third attempt.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(count.load(Ordering::SeqCst), 2);

    let (url, count) = hook_server(vec![500, 200]).await;
    let monitor = Monitor::start("m", settings(&url, 3));
    feed(&monitor, 1000.0).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    wait_for(&count, 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "delivered on the second attempt, no more"
    );
}
