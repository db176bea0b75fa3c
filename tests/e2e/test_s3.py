"""S3 inputs and the S3 publisher against moto's real S3 server: fetchers, jobs, `results()`."""

from __future__ import annotations

import io
import socket
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from compute.fetch import fetch_s3, s3_plan
from compute.publish_remote import S3Publisher, object_key, render_key
from shared import wire
from shared.errors import ExecutionFailed, Unavailable
from shared.natsserver import EmbeddedNats
from shared.s3 import S3Location
from shared.spec import load_spec
from shared.spec.params import S3Publisher as S3Params
from shared.spec.params import S3Source
from tests.corpus import corpus_text, fixture_spec
from tests.e2e.helpers_data import cat_job, noop_job, source
from tests.integration.stack import stack


def put(s3: Any, bucket: str, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def src(bucket: str, endpoint: str, **params: str) -> S3Source:
    return S3Source.model_validate({"Bucket": bucket, "Endpoint": endpoint, **params})


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def order(job: str = "j-1", execution: str = "e-1") -> wire.ExecutionOrder:
    return wire.ExecutionOrder(execution_id=execution, job_id=job, job_type="batch")


# ---- fetching ------------------------------------------------------------------------------


async def test_single_key_lands_in_target_folder(
    s3: Any, bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    put(s3, bucket, {"data/hello.txt": b"hello s3\n", "data/other.txt": b"no"})
    paths = await fetch_s3(src(bucket, s3_endpoint, Key="data/hello.txt"), tmp_path / "in")
    assert paths == [tmp_path / "in" / "hello.txt"]
    assert tree(tmp_path / "in") == {"hello.txt": b"hello s3\n"}


async def test_prefix_keeps_the_folder_layout(
    s3: Any, bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    put(
        s3,
        bucket,
        {
            "set1/": b"",  # a folder marker, as consoles make
            "set1/a.txt": b"a",
            "set1/sub/b.txt": b"b",
            "set10/c.txt": b"not under set1/",
            "other/d.txt": b"d",
        },
    )
    await fetch_s3(src(bucket, s3_endpoint, Key="set1/"), tmp_path / "in")
    assert tree(tmp_path / "in") == {"a.txt": b"a", "sub/b.txt": b"b"}


async def test_key_without_slash_naming_a_folder(
    s3: Any, bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    put(s3, bucket, {"set1/a.txt": b"a", "set1/sub/b.txt": b"b"})
    await fetch_s3(src(bucket, s3_endpoint, Key="set1"), tmp_path / "in")
    assert tree(tmp_path / "in") == {"a.txt": b"a", "sub/b.txt": b"b"}


async def test_wildcard_and_filter(s3: Any, bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    put(
        s3,
        bucket,
        {
            "logs/2023-09-01.log": b"sep1",
            "logs/2023-09-02.csv": b"sep2",
            "logs/2023-10-01.log": b"oct",
        },
    )
    await fetch_s3(src(bucket, s3_endpoint, Key="logs/2023-09-*"), tmp_path / "wild")
    assert tree(tmp_path / "wild") == {"2023-09-01.log": b"sep1", "2023-09-02.csv": b"sep2"}
    await fetch_s3(src(bucket, s3_endpoint, Key="logs/", Filter=r"\.log$"), tmp_path / "re")
    assert tree(tmp_path / "re") == {"2023-09-01.log": b"sep1", "2023-10-01.log": b"oct"}
    # a Filter over the whole bucket, no Key
    await fetch_s3(src(bucket, s3_endpoint, Filter=r"-10-"), tmp_path / "all")
    assert tree(tmp_path / "all") == {"logs/2023-10-01.log": b"oct"}


async def test_version_id_picks_an_old_version(
    s3: Any, bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="v.txt", Body=b"first")["VersionId"]
    s3.put_object(Bucket=bucket, Key="v.txt", Body=b"second")
    await fetch_s3(src(bucket, s3_endpoint, Key="v.txt", VersionID=first), tmp_path / "in")
    assert (tmp_path / "in" / "v.txt").read_bytes() == b"first"
    with pytest.raises(ExecutionFailed, match="single object") as err:
        await fetch_s3(src(bucket, s3_endpoint, Key="dir/", VersionID=first), tmp_path / "x")
    assert not err.value.retryable


async def test_missing_key_bucket_and_empty_prefix_are_final(
    s3: Any, bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    put(s3, bucket, {"data/a.txt": b"a"})
    cases = [
        (src(bucket, s3_endpoint, Key="data/missing.txt"), "not found"),
        (src("no-such-bucket-shoal", s3_endpoint, Key="a.txt"), "not found"),
        (src(bucket, s3_endpoint, Key="nothing-here/"), "no objects"),
        (src(bucket, s3_endpoint, Key="data/", Filter=r"\.csv$"), "no objects matching"),
        (src(bucket, s3_endpoint, Key="data/", Filter="("), "Filter"),
    ]
    for params, message in cases:
        with pytest.raises(ExecutionFailed, match=message) as err:
            await fetch_s3(params, tmp_path / "in")
        assert not err.value.retryable, params
    assert not any((tmp_path / "in").rglob("*.part"))


async def test_unreachable_endpoint_is_retryable(aws_env: None, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(Unavailable, match="cannot reach") as err:
        await fetch_s3(src("b", f"http://127.0.0.1:{port}", Key="a.txt"), tmp_path / "in")
    assert err.value.retryable


async def test_public_bucket_without_credentials(
    s3: Any, bucket: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="open.txt", Body=b"anyone", ACL="public-read")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    await fetch_s3(src(bucket, s3_endpoint, Key="open.txt"), tmp_path / "in")  # unsigned
    assert (tmp_path / "in" / "open.txt").read_bytes() == b"anyone"
    archive = tmp_path / "results.tar.gz"
    archive.write_bytes(b"x")
    spec = load_spec(yaml_publish(bucket, s3_endpoint, "k.tar.gz", "gzip"))
    with pytest.raises(ExecutionFailed, match="credentials") as err:  # writes are never anonymous
        await S3Publisher("n").publish(archive, order(), spec)
    assert not err.value.retryable


# ---- publishing ----------------------------------------------------------------------------


def yaml_publish(bucket: str, endpoint: str, key: str, encoding: str) -> str:
    return f"""
Type: batch
Tasks:
  - Engine: {{Type: noop}}
    Publisher:
      Type: s3
      Params: {{Bucket: {bucket}, Key: "{key}", Endpoint: "{endpoint}", Encoding: {encoding}}}
"""


def test_key_placeholders() -> None:
    now = datetime(2024, 3, 5, 7, 8, 9, tzinfo=UTC)
    key = "/r/{jobID}/{nodeID}/{executionID}-{date}-{time}.tar.gz"
    assert render_key(key, order("j-9", "e-7"), "node-3", now) == (
        "r/j-9/node-3/e-7-20240305-070809.tar.gz"
    )

    def params(key: str, encoding: str) -> S3Params:
        return S3Params.model_validate({"Bucket": "b", "Key": key, "Encoding": encoding})

    o = order("j", "e")
    assert object_key(params("out/", "gzip"), o, "n", now) == "out/e.tar.gz"
    assert object_key(params("", "gzip"), o, "n", now) == "e.tar.gz"
    assert object_key(params("out/{nodeID}", "plain"), o, "n", now) == "out/n/"
    assert object_key(params("", "plain"), o, "n", now) == "j/e/"


def test_fixture_specs_take_these_code_paths() -> None:
    """docker-s3-input.yaml's input is a prefix; ops-s3-publisher.yaml publishes plain files
    per node."""
    spec = fixture_spec("docker-s3-input.yaml")
    params = S3Source.model_validate(spec.task.input_sources[0].source.params)
    assert s3_plan(params) == ("seabed/2024/",) * 2
    assert params.region == "eu-north-1"
    publisher = S3Params.model_validate(fixture_spec("ops-s3-publisher.yaml").task.publisher.params)
    now = datetime.now(UTC)
    assert object_key(publisher, order(), "node-0", now) == "tables/node-0/"
    assert (publisher.endpoint, publisher.region) == (
        "http://minio.fixtures.invalid:9000",
        "fixture-region",
    )
    # {date}/{time}/{jobID}/{executionID} and gzip, the default encoding: one archive
    url_job = fixture_spec("batch-url-and-local-inputs.yaml")
    publisher = S3Params.model_validate(url_job.task.publisher.params)
    at = datetime(2024, 3, 5, 7, 8, 9, tzinfo=UTC)
    assert object_key(publisher, order("j-2", "e-3"), "n", at) == ("labels/20240305/070809/j-2/e-3")


def test_corpus_specs_take_these_code_paths() -> None:
    """docker-s3.yaml's input is a prefix; data-generator.yaml publishes plain files per node."""
    docker_s3 = load_spec(corpus_text("docker-s3.yaml"))
    params = S3Source.model_validate(docker_s3.task.input_sources[0].source.params)
    assert s3_plan(params) == ("integration-tests-do-not-delete/set1/",) * 2
    assert params.region == "eu-west-1"
    generator = load_spec(
        corpus_text("data-generator.yaml"),
        {
            "Region": "us",
            "Events": "3000",
            "StartDate": "2024-01-01",
            "EndDate": "2024-12-31",
            "RotateInterval": "month",
        },
    )
    publisher = S3Params.model_validate(generator.task.publisher.params)
    now = datetime.now(UTC)
    assert object_key(publisher, order(), "node-0", now) == "transactions/node-0/"
    assert (publisher.endpoint, publisher.region) == ("http://storage-local:9000", "storage-region")


async def test_publish_plain_and_gzip_directly(
    s3: Any, bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    (tmp_path / "w" / "outputs" / "data").mkdir(parents=True)
    (tmp_path / "w" / "stdout").write_text("out\n")
    (tmp_path / "w" / "outputs" / "data" / "x.csv").write_text("1,2\n")
    from shared.results import pack

    archive = pack(tmp_path / "w", ["data"], 0)
    spec = load_spec(yaml_publish(bucket, s3_endpoint, "plain/{executionID}", "plain"))
    ref = await S3Publisher("n1").publish(archive, order("j", "e"), spec)
    assert ref.location == S3Location(bucket, endpoint=s3_endpoint).url("plain/e/")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    # stderr too, empty: an archive always has stdout, stderr and exitCode
    assert keys == {"plain/e/stdout", "plain/e/stderr", "plain/e/exitCode", "plain/e/data/x.csv"}
    assert s3.get_object(Bucket=bucket, Key="plain/e/data/x.csv")["Body"].read() == b"1,2\n"

    spec = load_spec(yaml_publish(bucket, s3_endpoint, "gz/", "gzip"))
    ref = await S3Publisher("n1").publish(archive, order("j", "e"), spec)
    body = s3.get_object(Bucket=bucket, Key="gz/e.tar.gz")["Body"].read()
    assert ref.size == len(body) == archive.stat().st_size
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert {"stdout", "stderr", "exitCode", "data/x.csv"} <= set(tar.getnames())


# ---- end to end ----------------------------------------------------------------------------


async def test_wasm_job_reads_an_s3_key_and_a_prefix(
    nats_server: EmbeddedNats, s3: Any, bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    put(s3, bucket, {"in/hello.txt": b"hello from s3\n", "in/sub/deep.txt": b"deep file\n"})
    key_job = cat_job(
        "/inputs/hello.txt",
        [source("s3", "/inputs", Bucket=bucket, Key="in/hello.txt", Endpoint=s3_endpoint)],
        name="cat-key",
    )
    prefix_job = cat_job(
        "/data/sub/deep.txt",
        [source("s3", "/data", Bucket=bucket, Key="in/", Endpoint=s3_endpoint)],
        name="cat-prefix",
    )
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        for spec, expected in ((key_job, b"hello from s3\n"), (prefix_job, b"deep file\n")):
            job_id = await client.submit(spec)
            view = await client.wait(job_id, timeout=60)
            assert view.state == "Completed", view
            out = b"".join([x.data async for x in client.logs(job_id) if x.stream == "stdout"])
            assert out == expected


async def test_missing_s3_input_fails_once_with_a_clear_error(
    nats_server: EmbeddedNats, bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    spec = cat_job(
        "/inputs/nope.txt",
        [source("s3", "/inputs", Bucket=bucket, Key="nope.txt", Endpoint=s3_endpoint)],
    )
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        view = await client.wait(await client.submit(spec), timeout=60)
        assert view.state == "Failed", view
        assert len(view.executions) == 1  # not retried: another node would not find it either
        assert "not found" in view.executions[0].error, view.executions[0]


async def test_s3_publisher_gzip_with_placeholders_and_results(
    nats_server: EmbeddedNats, s3: Any, bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    key = "results/{jobID}/{nodeID}/{executionID}-{date}.tar.gz"
    publisher = {"Type": "s3", "Params": {"Bucket": bucket, "Key": key, "Endpoint": s3_endpoint}}
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        day = datetime.now(UTC).strftime("%Y%m%d")
        job_id = await client.submit(noop_job("hello gzip\n", publisher))
        view = await client.wait(job_id, timeout=60)
        assert view.state == "Completed", view
        (execution,) = view.executions
        assert execution.result is not None and execution.result.publisher == "s3"
        loc, object_name = S3Location.parse(execution.result.location)
        assert (loc.bucket, loc.endpoint) == (bucket, s3_endpoint)
        days = {day, datetime.now(UTC).strftime("%Y%m%d")}  # the test may straddle midnight
        assert object_name in {f"results/{view.id}/node-0/{execution.id}-{d}.tar.gz" for d in days}
        s3.head_object(Bucket=bucket, Key=object_name)
        (folder,) = await client.results(job_id, tmp_path / "got")
        assert (folder / "stdout").read_text() == "hello gzip\n"
        assert (folder / "exitCode").read_text() == "0\n"


async def test_s3_publisher_plain_and_results(
    nats_server: EmbeddedNats, s3: Any, bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    publisher = {
        "Type": "s3",
        "Params": {
            "Bucket": bucket,
            "Key": "plain/{nodeID}/{executionID}/",
            "Endpoint": s3_endpoint,
            "Region": "us-east-1",
            "Encoding": "plain",
        },
    }
    async with stack(nats_server.url, tmp_path, agents=1) as s, await s.client() as client:
        job_id = await client.submit(noop_job("hello plain\n", publisher))
        view = await client.wait(job_id, timeout=60)
        assert view.state == "Completed", view
        (execution,) = view.executions
        prefix = f"plain/node-0/{execution.id}/"
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]}
        assert {prefix + "stdout", prefix + "exitCode"} <= keys
        body = s3.get_object(Bucket=bucket, Key=prefix + "stdout")["Body"].read()
        assert body == b"hello plain\n"
        (folder,) = await client.results(job_id, tmp_path / "got")
        assert (folder / "stdout").read_text() == "hello plain\n"
