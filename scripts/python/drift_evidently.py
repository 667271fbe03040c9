#!/usr/bin/env python3
"""Evidently's own drift verdicts on generated data sets, for convoy-drift's
agreement test (drift/tests/evidently.rs).

Generates, with fixed seeds, reference/current data sets (no drift, mean
shift, variance shift, categorical shift, mixed; small (<= 1000 reference
rows: KS, chi-squared, z-test) and large (> 1000: Wasserstein, Jensen-Shannon)),
runs Evidently's `Report([DataDriftTable()])` on each with every column's type
declared (numerical or categorical), and writes the data and Evidently's
per-column results to JSON:

    .venv/bin/python3 scripts/python/drift_evidently.py drift/tests/fixtures/evidently.json

The committed fixture is what the Rust test reads without Python; the test
`evidently_fixture_regenerates` reruns this script when the venv exists and
checks Evidently still says the same.
"""

import json
import sys
import warnings

import numpy as np
import pandas as pd
import scipy
from scipy.stats import ks_2samp

import evidently
from evidently.legacy.metrics import DataDriftTable
from evidently.legacy.pipeline.column_mapping import ColumnMapping
from evidently.legacy.report import Report

NUMERICAL = ["gauss", "uniform", "few_values", "binary_num"]
CATEGORICAL = ["label", "flag"]
LABELS = ["cat", "dog", "bird", "fish", "frog"]


def frame(rng, rows, *, mean=0.0, sd=1.0, lo=0.0, hi=10.0, label_p=None, flag_p=0.3, few_p=None):
    """One data set; the parameters move one feature's distribution."""
    label_p = label_p or [0.4, 0.3, 0.15, 0.1, 0.05]
    few_p = few_p or [0.25, 0.25, 0.25, 0.25]
    return pd.DataFrame(
        {
            "gauss": np.round(rng.normal(mean, sd, rows), 5),
            "uniform": np.round(rng.uniform(lo, hi, rows), 5),
            # Numerical with 4 distinct values: chi-squared when small,
            # Jensen-Shannon when large.
            "few_values": rng.choice([1.0, 2.0, 3.0, 4.0], rows, p=few_p),
            # Numerical with 2 values: the z-test when small.
            "binary_num": rng.choice([0.0, 1.0], rows, p=[0.7, 0.3]),
            "label": rng.choice(LABELS, rows, p=label_p).astype(object),
            "flag": rng.choice(["yes", "no"], rows, p=[flag_p, 1 - flag_p]).astype(object),
        }
    )


SCENARIOS = {
    "no_drift": {},
    "mean_shift": {"mean": 0.6, "lo": 1.5, "hi": 11.5},
    "variance_shift": {"sd": 2.0, "lo": -5.0, "hi": 15.0},
    "categorical_shift": {
        "label_p": [0.1, 0.2, 0.2, 0.2, 0.3],
        "flag_p": 0.6,
        "few_p": [0.1, 0.2, 0.3, 0.4],
    },
    # Half the columns move: dataset drift at Evidently's share of 0.5.
    "mixed": {"mean": 0.6, "lo": 1.5, "hi": 11.5, "label_p": [0.1, 0.2, 0.2, 0.2, 0.3]},
    # Small shifts close to the thresholds.
    "slight_shift": {"mean": 0.12, "flag_p": 0.34},
}

SIZES = {
    # (reference rows, current rows)
    "small": (600, 400),
    "equal": (300, 300),
    "large": (2000, 1500),
}


def run_case(name, size, seed, params):
    n_ref, n_cur = SIZES[size]
    rng = np.random.default_rng(seed)
    ref = frame(rng, n_ref)
    cur = frame(rng, n_cur, **params)
    mapping = ColumnMapping(numerical_features=NUMERICAL, categorical_features=CATEGORICAL)
    report = Report(metrics=[DataDriftTable()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.run(reference_data=ref, current_data=cur, column_mapping=mapping)
    result = report.as_dict()["metrics"][0]["result"]
    columns = {}
    for col, r in result["drift_by_columns"].items():
        entry = {
            "stattest": r["stattest_name"],
            "score": float(r["drift_score"]),
            "threshold": float(r["stattest_threshold"]),
            "drifted": bool(r["drift_detected"]),
        }
        if col in NUMERICAL:
            # KS's statistic D, from scipy directly (Evidently reports the p-value).
            with warnings.catch_warnings():
                # Large samples fall back to scipy's asymptotic p-value; D is the same.
                warnings.simplefilter("ignore")
                entry["ks_statistic"] = float(ks_2samp(ref[col], cur[col]).statistic)
        columns[col] = entry
    return {
        "name": f"{name}_{size}",
        "reference": {
            "columns": [
                {
                    "name": c,
                    "kind": "numerical" if c in NUMERICAL else "categorical",
                    "values": ref[c].tolist(),
                }
                for c in NUMERICAL + CATEGORICAL
            ]
        },
        "current": {c: cur[c].tolist() for c in NUMERICAL + CATEGORICAL},
        "expected": {
            "columns": columns,
            "drifted_columns": int(result["number_of_drifted_columns"]),
            "share": float(result["share_of_drifted_columns"]),
            "dataset_drift": bool(result["dataset_drift"]),
        },
    }


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: drift_evidently.py OUT.json")
    cases = []
    seed = 20261205
    for size in SIZES:
        for name, params in SCENARIOS.items():
            seed += 1
            cases.append(run_case(name, size, seed, params))
    out = {
        "evidently": evidently.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "cases": cases,
    }
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    for c in cases:
        e = c["expected"]
        cols = " ".join(
            f"{k}:{v['stattest']}={'D' if v['drifted'] else '-'}" for k, v in e["columns"].items()
        )
        print(f"{c['name']:<26} dataset_drift={e['dataset_drift']!s:<5} share={e['share']:.3f}  {cols}")
    print(f"wrote {len(cases)} cases to {sys.argv[1]}")


if __name__ == "__main__":
    main()
