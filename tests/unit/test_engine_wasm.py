"""The wasm engine against small WAT modules: output, argv, env, files, limits, timeouts."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from compute.engines.base import Mount, RunRequest
from compute.engines.wasm import WasmEngine, resolve_module
from shared.errors import ExecutionFailed
from shared.spec.params import WasmParams
from tests.conftest import eventually

WASI = "wasi_snapshot_preview1"

HELLO = f"""(module
  (import "{WASI}" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hello, world\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 13))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""


def _dump(kind: str) -> str:
    """A module printing its NUL-separated args or environment block to stdout."""
    return f"""(module
  (import "{WASI}" "{kind}_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "{WASI}" "{kind}_get" (func $get (param i32 i32) (result i32)))
  (import "{WASI}" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $get (i32.const 64) (i32.const 1024)))
    (i32.store (i32.const 8) (i32.const 1024))
    (i32.store (i32.const 12) (i32.load (i32.const 4)))
    (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))"""


ARGC_EXIT = f"""(module
  (import "{WASI}" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "{WASI}" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (call $exit (i32.load (i32.const 0)))))"""

EXIT_3 = f"""(module
  (import "{WASI}" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 3))))"""

# Prints /inputs/in.txt (fd 3 is the first preopen), then exits with the errno of creating
# /inputs/new.txt: 0 when the preopen is writable.
READ_THEN_CREATE = f"""(module
  (import "{WASI}" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "{WASI}" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "{WASI}" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "{WASI}" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "in.txt")
  (data (i32.const 200) "new.txt")
  (func (export "_start") (local $err i32)
    (local.set $err (call $open (i32.const 3) (i32.const 0) (i32.const 100) (i32.const 6)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 0)))
    (if (local.get $err) (then (call $exit (i32.const 200))))
    (i32.store (i32.const 8) (i32.const 1024))
    (i32.store (i32.const 12) (i32.const 512))
    (drop (call $read (i32.load (i32.const 0)) (i32.const 8) (i32.const 1) (i32.const 16)))
    (i32.store (i32.const 12) (i32.load (i32.const 16)))
    (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 20)))
    (call $exit (call $open (i32.const 3) (i32.const 0) (i32.const 200) (i32.const 7)
      (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 0)))))"""

GROW_UNTIL_DENIED = """(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))"""

GROW_100_PAGES = f"""(module
  (import "{WASI}" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $exit (i32.eq (memory.grow (i32.const 100)) (i32.const -1)))))"""

LOOP = """(module (func (export "_start") (loop $forever (br $forever))))"""


def _write(tmp_path: Path, wat: str, name: str = "main.wasm") -> Path:
    path = tmp_path / name
    path.write_bytes(wasmtime.wat2wasm(wat))
    return path


def _request(tmp_path: Path, params: dict[str, Any], **kwargs: Any) -> RunRequest:
    kwargs.setdefault("mounts", (Mount(tmp_path / "main.wasm", "/main.wasm"),))
    return RunRequest(
        execution_id="e-1",
        job_id="j-1",
        params=WasmParams.model_validate({"EntryModule": "/main.wasm", **params}),
        workdir=tmp_path,
        stdout_path=tmp_path / "stdout",
        stderr_path=tmp_path / "stderr",
        **kwargs,
    )


def _wasm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("wasm-")]


async def _threads_gone() -> bool:
    """The run ends when its thread reports; the thread itself exits a moment later."""
    for _ in range(50):
        if not _wasm_threads():
            return True
        await asyncio.sleep(0.01)
    return False


async def test_hello_world_reaches_stdout_file(tmp_path: Path) -> None:
    _write(tmp_path, HELLO)
    result = await WasmEngine().run(_request(tmp_path, {}))
    assert (result.exit_code, result.error, result.timed_out, result.oom) == (0, "", False, False)
    assert (tmp_path / "stdout").read_text() == "hello, world\n"
    assert (tmp_path / "stderr").read_text() == ""


async def test_argv_is_module_name_then_parameters(tmp_path: Path) -> None:
    _write(tmp_path, _dump("args"))
    await WasmEngine().run(_request(tmp_path, {"Parameters": ["a b", 5]}))
    assert (tmp_path / "stdout").read_bytes() == b"main.wasm\0a b\0" + b"5\0"


async def test_argc_via_exit_code(tmp_path: Path) -> None:
    _write(tmp_path, ARGC_EXIT)
    result = await WasmEngine().run(_request(tmp_path, {"Parameters": ["x", "y", "z"]}))
    assert result.exit_code == 4


async def test_env_merges_request_and_params(tmp_path: Path) -> None:
    _write(tmp_path, _dump("environ"))
    params = {"EnvironmentVariables": {"B": "from-params", "C": "3"}}
    await WasmEngine().run(_request(tmp_path, params, env={"A": "1", "B": "from-request"}))
    env = (tmp_path / "stdout").read_bytes().rstrip(b"\0").split(b"\0")
    assert sorted(env) == [b"A=1", b"B=from-params", b"C=3"]


async def test_proc_exit_code(tmp_path: Path) -> None:
    _write(tmp_path, EXIT_3)
    result = await WasmEngine().run(_request(tmp_path, {}))
    assert (result.exit_code, result.error) == (3, "")


@pytest.mark.parametrize(("read_only", "create_errno"), [(True, 63), (False, 0)])
async def test_input_dir_is_preopened_read_only_unless_writable(
    tmp_path: Path, read_only: bool, create_errno: int
) -> None:
    _write(tmp_path, READ_THEN_CREATE)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "in.txt").write_text("input data\n")
    mounts = (Mount(tmp_path / "main.wasm", "/main.wasm"), Mount(inputs, "/inputs", read_only))
    result = await WasmEngine().run(_request(tmp_path, {}, mounts=mounts))
    assert (tmp_path / "stdout").read_text() == "input data\n"
    assert result.exit_code == create_errno  # 63 is WASI's EPERM
    assert (inputs / "new.txt").exists() is not read_only


async def test_entry_module_found_inside_dir_mount(tmp_path: Path) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    _write(modules, EXIT_3, "x.wasm")
    request = _request(
        tmp_path, {"EntryModule": "/app/modules/x.wasm"}, mounts=(Mount(modules, "/app/modules"),)
    )
    assert (await WasmEngine().run(request)).exit_code == 3


async def test_memory_limit_denies_growth_and_reports_oom(tmp_path: Path) -> None:
    _write(tmp_path, GROW_UNTIL_DENIED)
    result = await WasmEngine().run(_request(tmp_path, {}, memory_bytes=4 * 65536))
    assert result.exit_code != 0
    assert result.oom
    assert "unreachable" in result.error


async def test_memory_limit_makes_large_grow_fail(tmp_path: Path) -> None:
    _write(tmp_path, GROW_100_PAGES)
    engine = WasmEngine()
    assert (await engine.run(_request(tmp_path, {}))).exit_code == 0
    assert (await engine.run(_request(tmp_path, {}, memory_bytes=1 << 20))).exit_code == 1


async def test_initial_memory_above_limit_is_oom(tmp_path: Path) -> None:
    _write(tmp_path, """(module (memory 16) (func (export "_start")))""")
    result = await WasmEngine().run(_request(tmp_path, {}, memory_bytes=65536))
    assert result.oom
    assert result.exit_code != 0


async def test_trap_is_a_failed_result(tmp_path: Path) -> None:
    _write(tmp_path, """(module (func (export "_start") unreachable))""")
    result = await WasmEngine().run(_request(tmp_path, {}))
    assert result.exit_code == -1
    assert result.error == "wasm trap: wasm `unreachable` instruction executed"
    assert not result.oom


async def test_infinite_loop_times_out(tmp_path: Path) -> None:
    _write(tmp_path, LOOP)
    started = time.monotonic()
    result = await WasmEngine().run(_request(tmp_path, {}, timeout=0.5))
    assert time.monotonic() - started < 2.5
    assert result.timed_out
    assert result.exit_code == -1
    assert result.error == "execution timed out after 0.5s"
    assert await _threads_gone()


async def test_infinite_loop_stops_on_cancel(tmp_path: Path) -> None:
    _write(tmp_path, LOOP)
    task = asyncio.create_task(WasmEngine().run(_request(tmp_path, {})))
    await eventually(_wasm_threads, what="the wasm thread running")
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1
    assert await _threads_gone()


async def test_timeout_of_one_run_spares_a_concurrent_run(tmp_path: Path) -> None:
    _write(tmp_path, LOOP)
    engine = WasmEngine()
    survivor = asyncio.create_task(engine.run(_request(tmp_path, {}, timeout=30)))
    short = await engine.run(_request(tmp_path, {}, timeout=0.2))
    assert short.timed_out
    await asyncio.sleep(0.3)
    assert not survivor.done()
    survivor.cancel()
    with pytest.raises(asyncio.CancelledError):
        await survivor


async def test_compiled_module_is_cached(tmp_path: Path) -> None:
    _write(tmp_path, HELLO)
    engine = WasmEngine()
    for _ in range(3):
        assert (await engine.run(_request(tmp_path, {}))).exit_code == 0
    assert len(engine._cache) == 1
    assert (tmp_path / "stdout").read_text() == "hello, world\n"  # truncated per run


async def test_custom_entrypoint_and_import_module(tmp_path: Path) -> None:
    lib = """(module (func (export "answer") (result i32) (i32.const 42)))"""
    _write(tmp_path, lib, "lib.wasm")
    _write(
        tmp_path,
        f"""(module
          (import "lib" "answer" (func $answer (result i32)))
          (import "{WASI}" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "main") (call $exit (call $answer))))""",
    )
    params = {"Entrypoint": "main", "ImportModules": ["/lib.wasm"]}
    mounts = (Mount(tmp_path, "/"),)
    assert (await WasmEngine().run(_request(tmp_path, params, mounts=mounts))).exit_code == 42


async def test_missing_entry_module_fails(tmp_path: Path) -> None:
    request = _request(tmp_path, {"EntryModule": "/nope.wasm"}, mounts=(Mount(tmp_path, "/in"),))
    with pytest.raises(ExecutionFailed, match=r"/nope.wasm not found .*targets: /in\)") as info:
        await WasmEngine().run(request)
    assert not info.value.retryable


async def test_invalid_bytes_fail_not_retryable(tmp_path: Path) -> None:
    (tmp_path / "main.wasm").write_bytes(b"\0asm\1\0\0\0garbage")
    with pytest.raises(ExecutionFailed, match="not a valid wasm module") as info:
        await WasmEngine().run(_request(tmp_path, {}))
    assert not info.value.retryable


@pytest.mark.parametrize(
    ("wat", "message"),
    [
        ("""(module (import "env" "f" (func)))""", "unknown import: `env::f`"),
        ("""(module (func (export "other")))""", r"no function '_start' \(functions: other\)"),
        ("""(module (func (export "_start") (param i32)))""", "must take no arguments"),
    ],
)
async def test_unlinkable_module_fails(tmp_path: Path, wat: str, message: str) -> None:
    _write(tmp_path, wat)
    with pytest.raises(ExecutionFailed, match=message) as info:
        await WasmEngine().run(_request(tmp_path, {}))
    assert not info.value.retryable


def test_resolve_module_prefers_the_most_specific_mount(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m.wasm").write_bytes(b"")
    (tmp_path / "m.wasm").write_bytes(b"")
    (tmp_path / "wasm.main").write_bytes(b"")
    mounts = (Mount(tmp_path, "/"), Mount(tmp_path / "a", "/app"))
    assert resolve_module("/app/m.wasm", mounts) == tmp_path / "a" / "m.wasm"
    assert resolve_module("/m.wasm", mounts) == tmp_path / "m.wasm"
    assert resolve_module("wasm.main", (Mount(tmp_path / "wasm.main", "wasm.main"),)) == (
        tmp_path / "wasm.main"
    )
    assert resolve_module("wasm.main", (Mount(tmp_path / "wasm.main", "/wasm.main"),)) == (
        tmp_path / "wasm.main"
    )


def test_resolve_module_refuses_escapes(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (tmp_path / "secret.wasm").write_bytes(b"")
    (inputs / "link.wasm").symlink_to(tmp_path / "secret.wasm")
    with pytest.raises(ExecutionFailed, match=r"must not contain '\.\.'"):
        resolve_module("/in/../secret.wasm", (Mount(inputs, "/in"),))
    with pytest.raises(ExecutionFailed, match="not found"):
        resolve_module("/in/link.wasm", (Mount(inputs, "/in"),))


async def test_a_wat_module_that_does_not_parse_keeps_its_caret(tmp_path: Path) -> None:
    (tmp_path / "main.wasm").write_text("(module (func $f (unknown)))")
    with pytest.raises(ExecutionFailed) as info:
        await WasmEngine().run(_request(tmp_path, {}))
    lines = str(info.value).splitlines()
    assert lines[0].endswith("is not a valid wasm module: unknown operator or unexpected token")
    assert lines[-2] == "    1 | (module (func $f (unknown)))", lines
    assert lines[-1].index("^") == lines[-2].index("unknown"), lines
    assert not info.value.retryable
