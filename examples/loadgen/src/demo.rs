//! The batched-vs-unbatched matrix: a batched and an unbatched route at
//! several client counts, side by side, with the mean batch size the
//! server reported for each batched run (batch-axum's `/stats`, or the
//! multi-model server's `GET /v1/models`).

use std::fmt::Write as _;
use std::time::Duration;

use hyper::Uri;
use serde::Serialize;

use crate::cpu::{CpuPerRequest, CpuSample};
use crate::payload::Payloads;
use crate::{get_body, http_client, run_with, LoadConfig, LoadError, Summary};

/// JSON pointers into the server's `/stats` body: total batches and total
/// items the batcher has dispatched.
pub const STATS_BATCHES: &str = "/totals/batches";
/// See [`STATS_BATCHES`].
pub const STATS_ITEMS: &str = "/totals/items";

/// Where the server reports how many items and batches it has dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stats {
    /// batch-axum: `GET <path>` with [`STATS_BATCHES`] and [`STATS_ITEMS`].
    Totals {
        /// The path, e.g. `/stats`.
        path: String,
    },
    /// The multi-model server: `GET /v1/models`, the named deployment's
    /// versions' `batch.requests` and `batch.batches`, summed.
    V1Models {
        /// The deployment's name.
        deployment: String,
    },
}

impl Stats {
    fn path(&self) -> &str {
        match self {
            Stats::Totals { path } => path,
            Stats::V1Models { .. } => "/v1/models",
        }
    }

    /// Reads (batches, items) from the stats body.
    pub fn totals(&self, body: &[u8]) -> Option<(u64, u64)> {
        match self {
            Stats::Totals { .. } => stats_totals(body),
            Stats::V1Models { deployment } => v1_models_totals(body, deployment),
        }
    }
}

/// Reads (batches, items) of `deployment` from a `GET /v1/models` body.
pub fn v1_models_totals(body: &[u8], deployment: &str) -> Option<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let model = v
        .get("models")?
        .as_array()?
        .iter()
        .find(|m| m.get("name").and_then(|n| n.as_str()) == Some(deployment))?;
    let mut totals = (0, 0);
    for version in model.get("versions")?.as_array()? {
        let batch = version.get("batch")?;
        totals.0 += batch.get("batches")?.as_u64()?;
        totals.1 += batch.get("requests")?.as_u64()?;
    }
    Some(totals)
}

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// `http://127.0.0.1:PORT`, no path.
    pub base: String,
    /// Client counts, one row each.
    pub concurrency: Vec<usize>,
    /// Measured time per run.
    pub duration: Duration,
    /// Unmeasured time before each run (connections, caches).
    pub warmup: Duration,
    /// Number of inputs in each request body.
    pub input_width: usize,
    /// Path of the batched route.
    pub batched_path: String,
    /// Path of the unbatched route.
    pub unbatched_path: String,
    /// Where the batch statistics are.
    pub stats: Stats,
    /// Request bodies (default: `{"inputs":[...]}` of `input_width` numbers).
    pub payloads: Option<Payloads>,
    /// The server's process id, when it runs on this machine: each batched
    /// run then reports the CPU per request (see [`crate::cpu`]).
    pub server_pid: Option<u32>,
}

impl DemoConfig {
    /// The batch-axum example's routes on `base`, at 1, 16 and 64 clients,
    /// 4 s per run after 1 s of warm-up.
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            concurrency: vec![1, 16, 64],
            duration: Duration::from_secs(4),
            warmup: Duration::from_secs(1),
            input_width: 1024,
            batched_path: "/v1/models/mlp/infer".to_owned(),
            unbatched_path: "/v1/models/mlp-unbatched/infer".to_owned(),
            stats: Stats::Totals {
                path: "/stats".to_owned(),
            },
            payloads: None,
            server_pid: None,
        }
    }

    fn uri(&self, path: &str) -> Result<Uri, LoadError> {
        format!("{}{}", self.base, path)
            .parse()
            .map_err(|e| LoadError::new(format!("{}{path}: {e}", self.base)))
    }
}

/// One row of the demo table.
#[derive(Debug, Clone, Serialize)]
pub struct DemoRow {
    /// Number of clients.
    pub concurrency: usize,
    /// The unbatched route's figures.
    pub unbatched: Summary,
    /// The batched route's figures.
    pub batched: Summary,
    /// Items per batch the server dispatched during the batched run.
    pub mean_batch_size: Option<f64>,
    /// CPU per request during the batched run (with
    /// [`DemoConfig::server_pid`]).
    pub cpu: Option<CpuPerRequest>,
}

impl DemoRow {
    /// Batched items/s over unbatched items/s.
    pub fn speedup(&self) -> Option<f64> {
        (self.unbatched.items_per_s > 0.0)
            .then(|| self.batched.items_per_s / self.unbatched.items_per_s)
    }
}

/// Reads (batches, items) from a `/stats` body.
pub fn stats_totals(body: &[u8]) -> Option<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some((
        v.pointer(STATS_BATCHES)?.as_u64()?,
        v.pointer(STATS_ITEMS)?.as_u64()?,
    ))
}

/// Runs every route at every client count and returns the rows.
pub async fn run_demo(config: &DemoConfig) -> Result<Vec<DemoRow>, LoadError> {
    let payloads = config.payloads.clone().unwrap_or_else(|| {
        Payloads::single(crate::payload::Payload::json(crate::random_inputs_body(
            config.input_width,
            42,
        )))
    });
    let stats_uri = config.uri(config.stats.path())?;
    let max_clients = config.concurrency.iter().copied().max().unwrap_or(1);
    let client = http_client(max_clients);
    let mut rows = Vec::new();
    for &clients in &config.concurrency {
        let measure = |path: String, cpu: Option<u32>| {
            let payloads = payloads.clone();
            let client = client.clone();
            async move {
                let uri = config.uri(&path)?;
                let warm = LoadConfig::new(uri.clone())
                    .payloads(payloads.clone())
                    .concurrency(clients)
                    .duration(config.warmup);
                if !config.warmup.is_zero() {
                    run_with(&client, &warm).await?;
                }
                let cfg = LoadConfig::new(uri)
                    .payloads(payloads)
                    .concurrency(clients)
                    .duration(config.duration);
                let start = cpu.and_then(CpuSample::take);
                let summary = run_with(&client, &cfg).await?.summary();
                let end = cpu.and_then(CpuSample::take);
                let per_request = match (start, end) {
                    (Some(a), Some(b)) => a.per_request(&b, summary.ok),
                    _ => None,
                };
                Ok::<_, LoadError>((summary, per_request))
            }
        };
        let (unbatched, _) = measure(config.unbatched_path.clone(), None).await?;
        eprintln!("unbatched  {unbatched}");
        let before = config.stats.totals(&get_body(&client, &stats_uri).await?);
        let (batched, cpu) = measure(config.batched_path.clone(), config.server_pid).await?;
        let after = config.stats.totals(&get_body(&client, &stats_uri).await?);
        eprintln!("batched    {batched}");
        // The warm-up is inside the window; its batches are like the run's.
        let mean_batch_size = match (before, after) {
            (Some((b0, i0)), Some((b1, i1))) if b1 > b0 => {
                Some((i1 - i0) as f64 / (b1 - b0) as f64)
            }
            _ => None,
        };
        rows.push(DemoRow {
            concurrency: clients,
            unbatched,
            batched,
            mean_batch_size,
            cpu,
        });
    }
    Ok(rows)
}

/// The demo table as printed by `make demo`.
pub fn render_table(rows: &[DemoRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| clients | unbatched items/s |  p50 ms |  p99 ms | batched items/s |  p50 ms |  p99 ms | mean batch | errors (u/b) | speedup |"
    );
    let _ = writeln!(
        out,
        "|--------:|------------------:|--------:|--------:|----------------:|--------:|--------:|-----------:|-------------:|--------:|"
    );
    for row in rows {
        let mean = row
            .mean_batch_size
            .map_or_else(|| "-".to_owned(), |m| format!("{m:.1}"));
        let speedup = row
            .speedup()
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}x"));
        let _ = writeln!(
            out,
            "| {:>7} | {:>17.1} | {:>7.1} | {:>7.1} | {:>15.1} | {:>7.1} | {:>7.1} | {:>10} | {:>12} | {:>7} |",
            row.concurrency,
            row.unbatched.items_per_s,
            row.unbatched.p50_ms,
            row.unbatched.p99_ms,
            row.batched.items_per_s,
            row.batched.p50_ms,
            row.batched.p99_ms,
            mean,
            format!("{}/{}", row.unbatched.errors, row.batched.errors),
            speedup,
        );
    }
    out
}

/// One line saying what batching bought: the best speedup and where.
pub fn headline(rows: &[DemoRow]) -> Option<String> {
    let (row, speedup) = rows
        .iter()
        .filter_map(|r| r.speedup().map(|s| (r, s)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    let mean = row
        .mean_batch_size
        .map_or_else(String::new, |m| format!(", mean batch {m:.1}"));
    Some(format!(
        "batching: {speedup:.2}x the unbatched throughput at {} clients ({:.0} vs {:.0} items/s{mean}); p99 {:.1} ms vs {:.1} ms",
        row.concurrency, row.batched.items_per_s, row.unbatched.items_per_s, row.batched.p99_ms, row.unbatched.p99_ms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn summary(items_per_s: f64) -> Summary {
        Summary {
            mode: "closed",
            concurrency: 16,
            offered_per_s: None,
            ok: 10,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            elapsed_s: 1.0,
            items_per_s,
            p50_ms: 1.0,
            p90_ms: 2.0,
            p99_ms: 3.0,
            max_ms: 4.0,
        }
    }

    #[test]
    fn reads_stats_totals() {
        let body = br#"{"totals":{"batches":10,"items":250},"batcher":{}}"#;
        assert_eq!(stats_totals(body), Some((10, 250)));
        assert_eq!(stats_totals(br#"{"totals":{}}"#), None);
        assert_eq!(stats_totals(b"not json"), None);
    }

    #[test]
    fn reads_v1_models_totals() {
        let body = br#"{"models":[
            {"name":"other","versions":[{"batch":{"batches":1,"requests":1}}]},
            {"name":"minilm","versions":[{"batch":{"batches":10,"requests":80}},
                                         {"batch":{"batches":5,"requests":20}}]}]}"#;
        assert_eq!(v1_models_totals(body, "minilm"), Some((15, 100)));
        assert_eq!(v1_models_totals(body, "nope"), None);
        let stats = Stats::V1Models {
            deployment: "other".into(),
        };
        assert_eq!(stats.totals(body), Some((1, 1)));
        assert_eq!(stats.path(), "/v1/models");
    }

    #[test]
    fn table_has_speedup_and_batch_size() {
        let rows = vec![DemoRow {
            concurrency: 16,
            unbatched: summary(400.0),
            batched: summary(2000.0),
            mean_batch_size: Some(12.5),
            cpu: None,
        }];
        assert_eq!(rows[0].speedup(), Some(5.0));
        let table = render_table(&rows);
        assert!(table.contains("5.00x"), "{table}");
        assert!(table.contains("12.5"), "{table}");
        assert_eq!(table.lines().count(), 3);
        let line = headline(&rows).unwrap();
        assert!(
            line.contains("5.00x") && line.contains("16 clients"),
            "{line}"
        );
    }

    #[test]
    fn no_speedup_without_a_baseline() {
        let row = DemoRow {
            concurrency: 1,
            unbatched: summary(0.0),
            batched: summary(10.0),
            mean_batch_size: None,
            cpu: None,
        };
        assert_eq!(row.speedup(), None);
        assert!(render_table(std::slice::from_ref(&row)).contains(" - "));
        assert_eq!(headline(&[row]), None);
    }
}
