"""The deployment files: the Kubernetes Indexed Job, its Dockerfile and the Airflow DAG.

Parsed and checked for the fields a sharded run relies on. Airflow is too heavy
to install here: the DAG is checked as Python source (it parses, maps one task
per shard through the Python API with known config keys); it is also imported
when Airflow happens to be installed.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from uploader.settings import load_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _job() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "k8s" / "indexed-job.yaml").read_text())
    return data


def test_indexed_job_runs_one_shard_per_index() -> None:
    job = _job()
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    n = spec["completions"]
    assert n == spec["parallelism"] == 4
    (container,) = spec["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "run"
    assert args[args.index("--shard") + 1] == f"$(JOB_COMPLETION_INDEX)/{n}"
    # concurrency per shard keeps the client code's limit (8) shared, not multiplied
    assert int(args[args.index("--concurrency") + 1]) * n == 8
    env = {e["name"]: e for e in container["env"]}
    assert env["TARGET_PROFILE_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"
    assert "value" not in env["TARGET_PROFILE_TOKEN"]  # never inline
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    work_dir = args[args.index("--work-dir") + 1]
    assert work_dir.startswith(mounts["work"]["mountPath"] + "/")
    assert mounts["work"]["subPathExpr"] == "shard-$(JOB_COMPLETION_INDEX)"  # a dir per shard
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert "persistentVolumeClaim" in volumes["work"]  # the journal outlives the pod
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_dockerfile_is_slim_non_root_with_entrypoint() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "k8s" / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert re.fullmatch(r"FROM python:3\.\d+-slim", lines[0])
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["uploader"]' in lines
    job_user = _job()["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert str(job_user) == users[-1]


def _dag_source() -> ast.Module:
    return ast.parse((DEPLOY / "airflow" / "uploader_dag.py").read_text())


def test_dag_maps_one_task_per_shard_through_the_python_api() -> None:
    tree = _dag_source()
    consts = {
        t.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    assert consts["SHARDS"] * consts["CONCURRENCY"] == 8
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    expands = [c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "expand"]
    assert len(expands) == 1
    assert [k.arg for k in expands[0].keywords] == ["shard"]
    imports = {
        (n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
    }
    assert {("uploader.api", "load_settings"), ("uploader.api", "run")} <= imports
    dags = [
        kw.value.value
        for c in calls
        for kw in c.keywords
        if kw.arg == "dag_id" and isinstance(kw.value, ast.Constant)
    ]
    assert dags == ["target_profiles_load"]


def test_dag_config_keys_are_known() -> None:
    """The dotted keys the DAG passes to load_settings are real, valid settings."""
    tree = _dag_source()
    (keys_dict,) = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Dict)
        and any(isinstance(k, ast.Constant) and k.value == "submit.concurrency" for k in n.keys)
    ]
    keys = [k.value for k in keys_dict.keys if isinstance(k, ast.Constant)]
    assert sorted(keys) == ["input.shard", "submit.concurrency"]
    settings = load_settings(
        None, {"target.client": "acme", "input.shard": "3/4", "submit.concurrency": 2}, {}
    )
    assert (settings.input.shard_spec, settings.submit.concurrency) == ((3, 4), 2)


@pytest.mark.skipif(importlib.util.find_spec("airflow") is None, reason="Airflow not installed")
def test_dag_imports_in_airflow() -> None:  # pragma: no cover - only where Airflow is installed
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(DEPLOY / "airflow"), include_examples=False)
    assert bag.import_errors == {}
    assert "target_profiles_load" in bag.dags
