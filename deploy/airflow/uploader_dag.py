"""Airflow DAG: load one export as N shards, one mapped task per shard, then check the whole.

Each mapped task calls the Python API (``uploader.api``) in the worker, no
subprocess: shard ``i`` of ``N`` takes only the rows whose id hashes to it, in
its own work directory, so a retried task resumes its shard. The last task
combines the shards' reports like ``uploader status DIR...`` and fails when
any row failed or is still pending.

Variables (Airflow Variables or the environment of the workers):
``TARGET_PROFILE_TOKEN`` (the token, if the profile APIs are protected) and the
paths below. Target's in-flight limit is per client code: keep
``SHARDS * CONCURRENCY`` at or under it.
"""

from __future__ import annotations

import pendulum
from airflow.decorators import dag, task

EXPORT = "s3://crm-exports/{{ ds }}/profiles.csv.gz"
CONFIG = "/opt/airflow/config/uploader-acme.toml"
WORK_ROOT = "/opt/airflow/uploader-runs/{{ ds }}"
SHARDS = 4
CONCURRENCY = 2  # per shard: SHARDS * CONCURRENCY = 8, the client code's limit


@dag(
    dag_id="target_profiles_load",
    schedule="30 1 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["adobe-target", "uploader"],
)
def target_profiles_load() -> None:
    @task(retries=3)
    def upload_shard(shard: int, export: str, work_root: str) -> dict[str, object]:
        from uploader.api import load_settings, run

        settings = load_settings(
            CONFIG,
            {"input.shard": f"{shard}/{SHARDS}", "submit.concurrency": CONCURRENCY},
        )
        outcome = run(export, settings, work_dir=f"{work_root}/shard-{shard}")
        if outcome.exit_code == 3:  # not final yet: let Airflow retry, which resumes
            raise RuntimeError(f"shard {shard}/{SHARDS} not final yet: {outcome.report['error']}")
        if outcome.exit_code >= 2:
            raise RuntimeError(f"shard {shard}/{SHARDS}: {outcome.report['error']}")
        return {"shard": shard, "exit_code": outcome.exit_code, "rows": outcome.report["rows"]}

    @task
    def check(results: list[dict[str, object]]) -> None:
        failed = [r for r in results if r["exit_code"] != 0]
        if failed:
            raise RuntimeError(f"rows rejected or failed in shards {[r['shard'] for r in failed]}")

    results = upload_shard.partial(export=EXPORT, work_root=WORK_ROOT).expand(
        shard=list(range(SHARDS))
    )
    check(results)


target_profiles_load()
