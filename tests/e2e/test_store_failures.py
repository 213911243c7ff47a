"""Storage that cannot be used, as a user meets it on the command line: one line, a hint, exit 2.

Exit 1 means "drift found" (a cron job alarms on it), so an unreachable S3 endpoint or database
must never exit 1 or print a traceback; a misspelt bucket must never be created, trained into
and registered.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import free_port, wait_for_port
from tests.e2e.test_cli import _clean_env, as_json, assert_clean_error, cli, ok

from closedloop.storage.artifacts import MARKER

MODEL = "loans"


def _set_store(project: Path, **values: str) -> None:
    """Rewrite ``[store]`` settings in the project file written by ``closedloop init``."""
    path = project / "closedloop.toml"
    text = path.read_text()
    for key, value in values.items():
        text, count = re.subn(rf"(?m)^{key} = .*$", f'{key} = "{value}"', text)
        if count == 0:
            text = text.replace("[store]\n", f'[store]\n{key} = "{value}"\n')
    path.write_text(text)


def _buckets(endpoint: str) -> list[str]:
    import boto3

    return [b["Name"] for b in boto3.client("s3", endpoint_url=endpoint).list_buckets()["Buckets"]]


def _versions(project: Path) -> list[int]:
    database = project / ".closedloop" / "metadata.db"
    with sqlite3.connect(database) as conn:
        return [row[0] for row in conn.execute("SELECT number FROM versions ORDER BY number")]


@pytest.fixture(scope="module")
def s3_env(s3_endpoint: str) -> Iterator[str]:
    """The AWS environment of this module's commands: moto's endpoint and dummy credentials."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": s3_endpoint,
        }.items():
            patch.setenv(key, value)
        yield s3_endpoint


@pytest.fixture(scope="module")
def s3_template(s3_env: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A project trained once (loans v1 in production) with its artifacts in an S3 bucket."""
    import boto3

    bucket = f"template-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=bucket)
    folder = tmp_path_factory.mktemp("s3-template")
    ok(folder, "init")
    _set_store(folder, artifacts_url=f"s3://{bucket}/loans-project")
    ok(folder, "train")
    return folder, bucket


@pytest.fixture
def s3_project(s3_template: tuple[Path, str], s3_env: str, tmp_path: Path) -> Path:
    """A copy of the template: its project folder and its artifacts in a bucket of its own."""
    import boto3

    template, template_bucket = s3_template
    folder = tmp_path / "project"
    shutil.copytree(template, folder)
    bucket = _project_bucket(folder)
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket=bucket)
    for item in s3.list_objects_v2(Bucket=template_bucket)["Contents"]:
        source = {"Bucket": template_bucket, "Key": item["Key"]}
        s3.copy_object(Bucket=bucket, Key=item["Key"], CopySource=source)
    _set_store(folder, artifacts_url=f"s3://{bucket}/loans-project")
    return folder


def _project_bucket(folder: Path) -> str:
    return f"project-{abs(hash(str(folder))) % 10**10:010d}"


def _closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


# --------------------------------------------------------------------------------------------
# An unreachable S3 endpoint
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("monitor", MODEL), ("monitor", MODEL, "--json"), ("train",), ("serve", "--port", "0")],
    ids=["monitor", "monitor-json", "train", "serve"],
)
def test_an_unreachable_s3_endpoint_is_one_line_and_exit_2(
    s3_project: Path, args: tuple[str, ...]
) -> None:
    down = _closed_endpoint()
    result = cli(s3_project, *args, env=_clean_env(AWS_ENDPOINT_URL=down))
    url = f"s3://{_project_bucket(s3_project)}/loans-project"
    error = assert_clean_error(result, url, down)
    assert "botocore" not in result.stderr
    assert "hint:" in result.stderr and "AWS_ENDPOINT_URL" in result.stderr, result.stderr
    if "--json" in args:
        body = as_json(result)["error"]
        assert body["code"] == "store_error" and body["message"] in error


def test_store_s3_endpoint_url_is_the_endpoint_of_s3_urls(s3_project: Path, s3_env: str) -> None:
    down = _closed_endpoint()
    # The setting wins over AWS_ENDPOINT_URL, both ways.
    refused = cli(
        s3_project,
        "monitor",
        MODEL,
        env=_clean_env(AWS_ENDPOINT_URL=s3_env, CLOSEDLOOP_STORE_S3_ENDPOINT_URL=down),
    )
    assert_clean_error(refused, down)
    reached = cli(
        s3_project,
        "monitor",
        MODEL,
        env=_clean_env(AWS_ENDPOINT_URL=down, CLOSEDLOOP_STORE_S3_ENDPOINT_URL=s3_env),
    )
    # The store was read (v1's reference): the check stops only for want of logged traffic.
    assert_clean_error(reached, "logged rows")


# --------------------------------------------------------------------------------------------
# A misspelt bucket or prefix, and stores that do not belong together
# --------------------------------------------------------------------------------------------


def test_a_misspelt_bucket_is_refused_and_never_created(s3_project: Path, s3_env: str) -> None:
    typo = f"{_project_bucket(s3_project)}x"
    _set_store(s3_project, artifacts_url=f"s3://{typo}/loans-project")
    for args in (("train",), ("monitor", MODEL)):
        result = cli(s3_project, *args)
        error = assert_clean_error(result, f"s3://{typo}/loans-project", "does not exist", typo)
        assert "incumbent" not in error
        assert "never creates buckets" in result.stderr
    assert typo not in _buckets(s3_env)
    assert _versions(s3_project) == [1]  # nothing trained into the typo was registered


def test_a_new_project_on_a_missing_bucket_creates_nothing(tmp_path: Path, s3_env: str) -> None:
    missing = f"nothing-{uuid.uuid4().hex[:8]}"
    ok(tmp_path, "init")
    _set_store(tmp_path, artifacts_url=f"s3://{missing}/artifacts")
    assert_clean_error(cli(tmp_path, "train"), missing, "does not exist")
    assert missing not in _buckets(s3_env)
    assert _versions(tmp_path) == []


def test_a_misspelt_prefix_in_an_existing_bucket_is_refused(s3_project: Path) -> None:
    url = f"s3://{_project_bucket(s3_project)}/loans-projetc"
    _set_store(s3_project, artifacts_url=url)
    result = cli(s3_project, "train")
    assert_clean_error(result, url, "does not hold the artifacts")
    assert "metadata.db" in result.stderr  # the hint names both stores
    assert _versions(s3_project) == [1]


def test_an_artifact_store_of_another_metadata_store_is_refused(
    s3_project: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    ok(other, "init")
    url = f"s3://{_project_bucket(s3_project)}/loans-project"
    _set_store(other, artifacts_url=url)
    result = cli(other, "train")
    error = assert_clean_error(result, url, "another metadata store")
    # Both metadata stores are named: the marker's (the one the project was copied from) and ours.
    assert error.count("metadata.db") == 2 and str(other) in error
    assert _versions(s3_project) == [1]


def test_a_store_without_a_marker_is_adopted_when_it_holds_the_recorded_artifacts(
    s3_project: Path, s3_env: str
) -> None:
    """Artifact stores written before the marker existed keep working."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_env)
    bucket, key = _project_bucket(s3_project), f"loans-project/{MARKER}"
    marker = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    s3.delete_object(Bucket=bucket, Key=key)

    # The store is read (v1's reference); the check stops only for want of logged traffic.
    assert_clean_error(cli(s3_project, "monitor", MODEL), "logged rows")
    adopted = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert adopted["store_id"] == marker["store_id"]


def test_a_local_project_writes_its_marker_next_to_its_objects(tmp_path: Path) -> None:
    ok(tmp_path, "init")
    ok(tmp_path, "train")
    marker = json.loads((tmp_path / ".closedloop" / "artifacts" / MARKER).read_text())
    with sqlite3.connect(tmp_path / ".closedloop" / "metadata.db") as conn:
        (store_id,) = conn.execute("SELECT id FROM store_identity").fetchone()
    assert marker["store_id"] == store_id
    # A copy of the metadata database alone is another store's copy only if it keeps its id:
    # here a fresh database pointed at this artifact folder is refused.
    shutil.move(tmp_path / ".closedloop" / "metadata.db", tmp_path / "kept.db")
    assert_clean_error(cli(tmp_path, "train"), "another metadata store")


# --------------------------------------------------------------------------------------------
# An unreachable or unusable metadata store
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("monitor", MODEL), ("models",), ("train",)])
def test_an_unreachable_postgresql_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    ok(tmp_path, "init")
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    result = cli(tmp_path, *args, env=_clean_env(CLOSEDLOOP_STORE_METADATA_URL=url))
    assert_clean_error(result, "metadata store", "127.0.0.1")
    assert "store.metadata_url" in result.stderr


def test_a_sqlite_store_in_a_folder_that_cannot_exist_is_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    ok(tmp_path, "init")
    (tmp_path / "file").write_text("not a folder")
    url = f"sqlite:///{tmp_path / 'file' / 'metadata.db'}"
    # `train` creates the store (a read command would only say there is none yet)
    result = cli(tmp_path, "train", env=_clean_env(CLOSEDLOOP_STORE_METADATA_URL=url))
    assert_clean_error(result, "metadata store", str(tmp_path / "file"))


# --------------------------------------------------------------------------------------------
# The server when the S3 endpoint goes down
# --------------------------------------------------------------------------------------------


@pytest.fixture
def own_s3() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A moto S3 server of this test's own, which the test may stop."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_server_answers_503_for_storage_it_cannot_reach_and_keeps_serving(
    s3_template: tuple[Path, str],
    s3_env: str,
    own_s3: tuple[str, subprocess.Popen[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3
    import httpx
    from tests.e2e.conftest import start_server, stop_server, wait_ready

    template, template_bucket = s3_template
    endpoint, moto = own_s3
    folder = tmp_path / "project"
    shutil.copytree(template, folder)
    source, target = (boto3.client("s3", endpoint_url=e) for e in (s3_env, endpoint))
    target.create_bucket(Bucket="served")
    for item in source.list_objects_v2(Bucket=template_bucket)["Contents"]:
        body = source.get_object(Bucket=template_bucket, Key=item["Key"])["Body"].read()
        target.put_object(Bucket="served", Key=item["Key"], Body=body)
    artifacts = "s3://served/loans-project"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    for key in [k for k in os.environ if k.startswith("CLOSEDLOOP_")]:
        monkeypatch.delenv(key)
    metadata = f"sqlite:///{folder / '.closedloop' / 'metadata.db'}"
    process, url = start_server(folder, metadata, artifacts)
    try:
        wait_ready(url, process)
        rows = pd.read_parquet(folder / "data" / "loans.parquet").drop(columns=["default"]).head(3)
        body = {
            "dataframe_split": {
                "columns": list(rows.columns),
                "data": rows.astype(object).values.tolist(),
            }
        }
        answered = httpx.post(f"{url}/invocations", json=body, headers={"X-Request-ID": "r-1"})
        assert answered.status_code == 200, answered.text
        label = {"request_id": "r-1", "label": 1}
        assert httpx.post(f"{url}/models/{MODEL}/feedback", json=label).status_code == 200

        moto.terminate()
        moto.wait(timeout=10)
        refused = httpx.post(f"{url}/models/{MODEL}/feedback", json=label, timeout=60)
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "store_error"
        assert "s3://served/loans-project/feedback" in error["message"]
        assert "AWS_ENDPOINT_URL" in error["hint"]
        still = httpx.post(f"{url}/invocations", json=body, timeout=10)
        assert still.status_code == 200  # the loaded version keeps serving
        assert still.headers["x-model-version"] == "1"
    finally:
        stop_server(process)
