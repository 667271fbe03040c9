#!/usr/bin/env python3
"""convoy's exported models in an MLflow Model Registry: register, promote, show.

Run through scripts/registry.sh, which starts the tracking server and sets
MLFLOW_TRACKING_URI; or directly with the project's .venv python:

  registry.py register MODEL:EXPORT [MODEL:EXPORT ...]
      Uploads models/<MODEL>/<EXPORT>/ (model.pt, model.json, tokenizer or
      labels, references) as the artifacts of a run and registers them as a
      new version of MODEL. Idempotent: a folder whose model.pt is already
      registered (same SHA-256, kept in the version's tags) is not uploaded
      again; its existing version is reported.
  registry.py promote MODEL VERSION [--alias A] [--stage S]
      Points alias A (default champion) at VERSION and/or moves VERSION to
      stage S with archive_existing_versions=True, so the version already in
      that stage moves to Archived in the same call and MLflow never answers
      "another version is already in Production".
  registry.py show MODEL [MODEL ...]
      Versions, their stages, tags and the aliases.

Each command prints one line per model version it touched, in the form
`MODEL version V ...`, so scripts can pick the numbers out.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import warnings
from pathlib import Path

# MLflow's legacy stages still work but warn on every call.
warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

# "Waiting for model version to finish creation" on every registration.
logging.getLogger("mlflow").setLevel(logging.WARNING)

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "convoy-models"
STAGES = ["None", "Staging", "Production", "Archived"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def client() -> MlflowClient:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        sys.exit("registry: MLFLOW_TRACKING_URI is not set (scripts/registry.sh start prints it)")
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def versions_of(c: MlflowClient, name: str) -> list:
    try:
        c.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    return sorted(c.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))


def shown(path: Path) -> str:
    """`path` relative to the working directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def register(c: MlflowClient, model: str, export: str, models_dir: Path) -> None:
    folder = models_dir / model / export
    manifest_path = folder / "model.json"
    if not manifest_path.is_file():
        sys.exit(
            f"registry: {manifest_path} is missing: export it with "
            f".venv/bin/python scripts/export_models.py --only {model} --version {export}"
        )
    manifest = json.loads(manifest_path.read_text())
    weights = folder / manifest.get("file", "model.pt")
    digest = sha256(weights)
    for v in versions_of(c, model):
        if v.tags.get("convoy.sha256") == digest:
            print(f"{model} version {v.version} already registered from {shown(folder)} (export {export}, unchanged)")
            return
    try:
        c.create_registered_model(model, description=f"convoy example model {model} (scripts/export_models.py)")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    experiment = c.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else c.create_experiment(EXPERIMENT)
    run = c.create_run(experiment_id, run_name=f"{model}-export-{export}")
    run_id = run.info.run_id
    if not run.info.artifact_uri.startswith("mlflow-artifacts:"):
        sys.exit(
            f"registry: the run's artifacts go to {run.info.artifact_uri}, not through the tracking server: "
            "start it with --serve-artifacts (scripts/registry.sh start does)"
        )
    c.log_artifacts(run_id, str(folder), artifact_path="model")
    with contextlib.redirect_stdout(io.StringIO()):  # "View run at ..." links
        c.set_terminated(run_id)
    tags = {
        "convoy.export": export,
        "convoy.sha256": digest,
        "convoy.weights": str(manifest.get("weights", ""))[:4000],
    }
    drift = manifest.get("cosine_to_original")
    if drift:
        tags["convoy.cosine_to_original_min"] = f"{drift['min']:.4f}"
    v = c.create_model_version(
        model,
        source=f"{run.info.artifact_uri}/model",
        run_id=run_id,
        tags=tags,
        description=str(manifest.get("weights", "")),
    )
    print(f"{model} version {v.version} registered from {shown(folder)} (export {export}; run {run_id})")


def promote(c: MlflowClient, model: str, version: str, alias: str | None, stage: str | None) -> None:
    try:
        v = c.get_model_version(model, version)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            sys.exit(f"registry: {model} has no version {version} (scripts/registry.sh show {model})")
        raise
    if alias:
        before = None
        try:
            before = c.get_model_version_by_alias(model, alias).version
        except MlflowException:
            pass
        c.set_registered_model_alias(model, alias, v.version)
        print(f"{model} version {v.version} is now @{alias}" + (f" (was version {before})" if before else ""))
    if stage:
        archived = [
            o.version for o in versions_of(c, model) if o.current_stage == stage and o.version != v.version
        ]
        c.transition_model_version_stage(model, v.version, stage, archive_existing_versions=stage in ("Staging", "Production"))
        note = f" (archived version {', '.join(archived)})" if archived else ""
        print(f"{model} version {v.version} is now in {stage}{note}")


def show(c: MlflowClient, model: str) -> None:
    vs = versions_of(c, model)
    if not vs:
        print(f"{model}: not registered")
        return
    aliases = c.get_registered_model(model).aliases or {}
    by_version: dict[str, list[str]] = {}
    for a, ver in aliases.items():
        by_version.setdefault(str(ver), []).append("@" + a)
    for v in vs:
        print(
            f"{model} version {v.version}  stage {v.current_stage:<10} "
            f"{' '.join(sorted(by_version.get(v.version, []))) or '-':<12} "
            f"export {v.tags.get('convoy.export', '?')}"
            + (
                f"  cosine to the original {v.tags['convoy.cosine_to_original_min']}"
                if "convoy.cosine_to_original_min" in v.tags
                else ""
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("register", help="register exported folders as new versions")
    r.add_argument("items", nargs="+", metavar="MODEL:EXPORT")
    r.add_argument("--models-dir", default=str(ROOT / "models"))
    p = sub.add_parser("promote", help="point an alias at a version and/or move it to a stage")
    p.add_argument("model")
    p.add_argument("version")
    p.add_argument("--alias", default=None)
    p.add_argument("--stage", default=None, choices=STAGES)
    s = sub.add_parser("show", help="versions, stages and aliases")
    s.add_argument("models", nargs="+")
    args = parser.parse_args()
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", ""))
    c = client()
    if args.command == "register":
        for item in args.items:
            model, sep, export = item.partition(":")
            if not sep or not model or not export.isdigit():
                parser.error(f"register: {item!r} is not MODEL:EXPORT (e.g. minilm:2)")
            register(c, model, export, Path(args.models_dir))
    elif args.command == "promote":
        if not args.version.isdigit():
            parser.error(f"promote: version {args.version!r} is not a number")
        if not args.alias and not args.stage:
            parser.error("promote: give --alias and/or --stage")
        promote(c, args.model, args.version, args.alias, args.stage)
    else:
        for m in args.models:
            show(c, m)


if __name__ == "__main__":
    main()
