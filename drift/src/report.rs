//! A window's drift report: per column the test, its score and verdict, and
//! the dataset verdict; as JSON (serde) and as a readable HTML page.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::reference::Reference;
use crate::stats::{ks_2samp, ColumnKind, ColumnValues, StatTest};

/// The window a report covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowInfo {
    /// Windows since the monitor started (0-based).
    pub index: u64,
    /// Window start, milliseconds since the Unix epoch.
    pub start_unix_ms: u64,
    /// Window end, milliseconds since the Unix epoch.
    pub end_unix_ms: u64,
    /// Requests the monitor saw in the window.
    pub requests: u64,
    /// Rows sampled (at most the sample size).
    pub sampled: usize,
    /// Sampled rows lost because the monitor's queue was full.
    pub dropped: u64,
}

/// One column's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    /// The column.
    pub column: String,
    /// Numbers or labels.
    pub kind: ColumnKind,
    /// The test (Evidently's name).
    pub stattest: StatTest,
    /// The test's display name (Evidently's).
    pub stattest_name: String,
    /// `"p_value"` or `"distance"`: what `score` is.
    pub score_kind: String,
    /// The p-value or the distance (`null` when the test could not run).
    pub score: Option<f64>,
    /// KS's statistic D, for `ks`.
    pub statistic: Option<f64>,
    /// The threshold applied.
    pub threshold: f64,
    /// Whether the column drifted.
    pub drifted: bool,
    /// Current rows tested (finite values).
    pub current_rows: usize,
    /// Reference rows.
    pub reference_rows: usize,
    /// Why the test could not run, if it could not.
    pub error: Option<String>,
}

/// A window's drift report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// The model or deployment monitored.
    pub name: String,
    /// The window.
    pub window: WindowInfo,
    /// Whether the window had enough rows to be tested.
    pub tested: bool,
    /// Per-column results (empty when not tested).
    pub columns: Vec<ColumnDrift>,
    /// Columns that drifted.
    pub drifted_columns: usize,
    /// Share of tested columns that drifted.
    pub share: f64,
    /// The dataset-drift threshold on `share`.
    pub drift_share: f64,
    /// Dataset drift: `share >= drift_share`.
    pub dataset_drift: bool,
}

/// Options of [`compare`].
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Per column (reference order): forced test and threshold override.
    pub per_column: Vec<(Option<StatTest>, Option<f64>)>,
    /// Dataset drift when the share of drifted columns is at least this.
    pub drift_share: f64,
}

impl CompareOptions {
    /// Evidently's defaults for `columns` columns: default test choice,
    /// default thresholds, drift share 0.5.
    pub fn evidently_defaults(columns: usize) -> Self {
        Self {
            per_column: vec![(None, None); columns],
            drift_share: 0.5,
        }
    }
}

/// The result of [`compare`]: per-column results and the dataset verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Per column, in the reference's order.
    pub columns: Vec<ColumnDrift>,
    /// Columns that drifted.
    pub drifted_columns: usize,
    /// Drifted share of the columns whose test ran.
    pub share: f64,
    /// `share >= drift_share`.
    pub dataset_drift: bool,
}

/// Tests every reference column against `current` (same order, same length
/// as the reference's columns) as Evidently's `DataDriftTable` does:
/// non-finite values dropped, the test chosen per column (forced or
/// Evidently's default), the threshold (override or the test's default),
/// and the dataset drifted when at least `drift_share` of the columns did.
pub fn compare(
    reference: &Reference,
    current: &[ColumnValues],
    opts: &CompareOptions,
) -> Comparison {
    let mut columns = Vec::with_capacity(reference.columns.len());
    for (i, col) in reference.columns.iter().enumerate() {
        let cur = current
            .get(i)
            .map(crate::stats::clean)
            .unwrap_or(ColumnValues::Numerical(Vec::new()));
        let (forced, t) = opts.per_column.get(i).copied().unwrap_or((None, None));
        let test = forced.unwrap_or_else(|| StatTest::default_for(&col.values, &cur));
        let threshold = t.unwrap_or_else(|| test.default_threshold());
        let (score, error) = match test.score(&col.values, &cur) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let statistic = match (test, &col.values, &cur) {
            (StatTest::Ks, ColumnValues::Numerical(r), ColumnValues::Numerical(c))
                if error.is_none() =>
            {
                Some(ks_2samp(r, c).statistic)
            }
            _ => None,
        };
        columns.push(ColumnDrift {
            column: col.name.clone(),
            kind: col.kind,
            stattest: test,
            stattest_name: test.display_name().to_string(),
            score_kind: if test.is_p_value() {
                "p_value"
            } else {
                "distance"
            }
            .to_string(),
            score,
            statistic,
            threshold,
            drifted: score.is_some_and(|s| test.drifted(s, threshold)),
            current_rows: cur.len(),
            reference_rows: col.values.len(),
            error,
        });
    }
    let ran = columns.iter().filter(|c| c.score.is_some()).count();
    let drifted_columns = columns.iter().filter(|c| c.drifted).count();
    let share = if ran == 0 {
        0.0
    } else {
        drifted_columns as f64 / ran as f64
    };
    Comparison {
        columns,
        drifted_columns,
        share,
        dataset_drift: ran > 0 && share >= opts.drift_share,
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn fmt_score(x: Option<f64>) -> String {
    match x {
        None => "—".into(),
        Some(v) if v != 0.0 && v.abs() < 1e-3 => format!("{v:.3e}"),
        Some(v) => format!("{v:.4}"),
    }
}

impl DriftReport {
    /// The report as a standalone HTML page (no scripts, no external assets).
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        let name = escape(&self.name);
        let verdict = if !self.tested {
            "not tested: too few samples"
        } else if self.dataset_drift {
            "DATASET DRIFT DETECTED"
        } else {
            "no dataset drift"
        };
        let verdict_class = if self.dataset_drift { "bad" } else { "ok" };
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Drift report: {name}</title><style>\
             body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
             table{{border-collapse:collapse;margin-top:1em}}\
             th,td{{border:1px solid #ccc;padding:.35em .7em;text-align:left}}\
             th{{background:#f3f3f3}}td.num{{text-align:right;font-variant-numeric:tabular-nums}}\
             .bad{{color:#b00020;font-weight:bold}}.ok{{color:#1b5e20;font-weight:bold}}\
             </style></head><body>\n<h1>Data drift: {name}</h1>\n"
        );
        let _ = write!(
            h,
            "<p class=\"{verdict_class}\">{verdict}</p>\n<p>Drifted columns: {} of {} \
             (share {:.3}, dataset drift at &ge; {:.3}).</p>\n",
            self.drifted_columns,
            self.columns.len(),
            self.share,
            self.drift_share
        );
        let w = &self.window;
        let _ = writeln!(
            h,
            "<p>Window {}: {} requests, {} sampled, {} dropped \
             (unix ms {}&ndash;{}).</p>",
            w.index, w.requests, w.sampled, w.dropped, w.start_unix_ms, w.end_unix_ms
        );
        h.push_str(
            "<table><thead><tr><th>Column</th><th>Type</th><th>Test</th>\
             <th>Score</th><th>Threshold</th><th>Rows (ref / cur)</th><th>Drift</th></tr></thead><tbody>\n",
        );
        for c in &self.columns {
            let drift = match (&c.error, c.drifted) {
                (Some(e), _) => format!("error: {}", escape(e)),
                (None, true) => "<span class=\"bad\">Detected</span>".into(),
                (None, false) => "<span class=\"ok\">Not detected</span>".into(),
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{} / {}</td><td>{}</td></tr>",
                escape(&c.column),
                c.kind,
                escape(&c.stattest_name),
                fmt_score(c.score),
                c.threshold,
                c.reference_rows,
                c.current_rows,
                drift
            );
        }
        h.push_str("</tbody></table>\n</body></html>\n");
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ReferenceColumn;

    fn reference() -> Reference {
        Reference {
            columns: vec![
                ReferenceColumn {
                    name: "x<script>".into(),
                    kind: ColumnKind::Numerical,
                    values: ColumnValues::Numerical(
                        (0..200).map(|i| f64::from(i) / 10.0).collect(),
                    ),
                },
                ReferenceColumn {
                    name: "label".into(),
                    kind: ColumnKind::Categorical,
                    values: ColumnValues::Categorical(
                        (0..200)
                            .map(|i| ["a", "b", "c"][i % 3].to_string())
                            .collect(),
                    ),
                },
            ],
        }
    }

    #[test]
    fn a_shift_in_one_of_two_columns_is_dataset_drift() {
        let r = reference();
        let shifted =
            ColumnValues::Numerical((0..200).map(|i| f64::from(i) / 10.0 + 5.0).collect());
        let same = r.columns[1].values.clone();
        let cmp = compare(&r, &[shifted, same], &CompareOptions::evidently_defaults(2));
        assert_eq!(cmp.columns[0].stattest, StatTest::Ks);
        assert!(cmp.columns[0].drifted);
        assert_eq!(cmp.columns[1].stattest, StatTest::ChiSquare);
        assert!(!cmp.columns[1].drifted);
        assert_eq!(
            (cmp.drifted_columns, cmp.share, cmp.dataset_drift),
            (1, 0.5, true)
        );
    }

    #[test]
    fn a_missing_column_is_an_error_not_drift() {
        let r = reference();
        let cmp = compare(
            &r,
            &[r.columns[0].values.clone()],
            &CompareOptions::evidently_defaults(2),
        );
        assert!(cmp.columns[1].error.is_some());
        assert!(!cmp.columns[1].drifted);
        assert!(!cmp.dataset_drift);
    }

    #[test]
    fn html_escapes_names_and_shows_the_verdict() {
        let r = reference();
        let cmp = compare(
            &r,
            &[r.columns[0].values.clone(), r.columns[1].values.clone()],
            &CompareOptions::evidently_defaults(2),
        );
        let report = DriftReport {
            name: "m&m".into(),
            window: WindowInfo {
                index: 3,
                start_unix_ms: 0,
                end_unix_ms: 1,
                requests: 10,
                sampled: 10,
                dropped: 0,
            },
            tested: true,
            drifted_columns: cmp.drifted_columns,
            share: cmp.share,
            drift_share: 0.5,
            dataset_drift: cmp.dataset_drift,
            columns: cmp.columns,
        };
        let html = report.to_html();
        assert!(html.contains("x&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"));
        assert!(html.contains("m&amp;m"));
        assert!(html.contains("no dataset drift"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["columns"][0]["stattest"], "ks");
        assert_eq!(json["columns"][0]["score_kind"], "p_value");
    }
}
