"""The wasm engine: runs a WASI preview1 module in-process with wasmtime, one thread per run."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import wasmtime

from compute.engines.base import Engine, Mount, RunRequest, RunResult
from shared.errors import ExecutionFailed
from shared.spec.params import WasmParams

_T = TypeVar("_T")
_WASM_PAGE = 65536
_CACHE_SIZE = 32


def resolve_module(path: str, mounts: Sequence[Mount]) -> Path:
    """The host file behind the task path `path`, looked up in the mounts (most specific first)."""
    if ".." in path.split("/"):
        raise ExecutionFailed(f"module path {path!r} must not contain '..'", retryable=False)
    wanted = _guest_path(path)
    for mount in sorted(mounts, key=lambda m: len(_guest_path(m.target)), reverse=True):
        target = _guest_path(mount.target)
        if wanted == target:
            candidate = mount.host_path
        elif target == "/" or wanted.startswith(target + "/"):
            root = mount.host_path.resolve()
            candidate = (root / wanted[len(target) :].lstrip("/")).resolve()
            if not candidate.is_relative_to(root):  # a symlink pointing out of the mount
                continue
        else:
            continue
        if candidate.is_file():
            return candidate
    targets = ", ".join(sorted(_guest_path(m.target) for m in mounts)) or "none"
    raise ExecutionFailed(
        f"entry module {path} not found in any input source (targets: {targets})", retryable=False
    )


def _guest_path(path: str) -> str:
    # A bare `wasm.main` names the same file as `/wasm.main`; the leading "//" normpath
    # would keep is stripped first.
    return posixpath.normpath("/" + path.lstrip("/"))


@contextlib.contextmanager
def _map_wasmtime_errors(what: str) -> Iterator[None]:
    """The one place wasmtime exceptions become Shoal's; a bad module never improves on retry."""
    try:
        yield
    except wasmtime.ExitTrap:
        raise  # the guest exiting is a result, as are traps (never WasmtimeErrors): caller's
    except wasmtime.WasmtimeError as exc:
        raise ExecutionFailed(f"{what}: {_describe(exc)}", retryable=False) from None


def _describe(exc: Exception) -> str:
    """Wasmtime's error chain (with backtrace) as one line, most specific cause last; any other
    message keeps its lines, so a compile error's caret still points at the source line."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Caused by:" not in lines:
        return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())
    at = lines.index("Caused by:")
    head = lines[0].removesuffix(":")
    causes = lines[at + 1 :]
    if isinstance(exc, wasmtime.Trap) or head.startswith("error while executing"):
        return causes[-1].removeprefix("wasm trap: ") if causes else head
    return ": ".join([head, *causes])


@dataclass
class _Run:
    """One execution's wasmtime state; `stop` is set before the epoch is bumped, never after."""

    engine: wasmtime.Engine
    request: RunRequest
    params: WasmParams
    stop: threading.Event = field(default_factory=threading.Event)

    def interrupt(self) -> None:
        self.stop.set()
        self.engine.increment_epoch()


class WasmEngine(Engine):
    """Runs WASI modules; every run gets its own wasmtime Engine so interrupting one spares others.

    Wasmtime's epoch counter belongs to the Engine, so a shared Engine would trap every running
    store on one timeout. Compiled code is still shared: modules are cached (by sha256 of their
    bytes) in serialized form, which a fresh Engine with the same config loads without compiling.
    `ImportModules` are instantiated first and linked under their file name without `.wasm`.
    """

    name = "wasm"

    def __init__(self, cache_size: int = _CACHE_SIZE) -> None:
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    async def probe(self) -> bool:
        return True

    async def run(self, request: RunRequest) -> RunResult:
        params = request.params
        if not isinstance(params, WasmParams):
            raise ExecutionFailed(
                f"wasm engine given {type(params).__name__}, not WasmParams", retryable=False
            )
        run = _Run(_new_engine(), request, params)
        future = _in_thread(lambda: self._execute(run), f"wasm-{request.execution_id}")
        try:
            done, _ = await asyncio.wait({future}, timeout=request.timeout)
        except asyncio.CancelledError:
            run.interrupt()
            await _drain(future)
            raise
        if not done:
            run.interrupt()
            await _drain(future)
        result = future.result()
        if result is None:  # trapped by our own interrupt: only the timeout path bumps the epoch
            return RunResult(
                exit_code=-1,
                error=f"execution timed out after {request.timeout:g}s",
                timed_out=True,
            )
        return result

    def _execute(self, run: _Run) -> RunResult | None:
        """The blocking part, in the run's own thread; None means stopped by `run.interrupt()`."""
        req, params = run.request, run.params
        store = wasmtime.Store(run.engine)
        store.set_epoch_deadline(1)
        if req.memory_bytes is not None:
            store.set_limits(memory_size=req.memory_bytes)
        with _map_wasmtime_errors(f"cannot start {params.entry_module}"):
            store.set_wasi(_wasi_config(req, params))
            linker = wasmtime.Linker(run.engine)
            linker.define_wasi()
        instance: wasmtime.Instance | None = None
        try:
            imports = [(p, self._load(run.engine, p, req.mounts)) for p in params.import_modules]
            module = self._load(run.engine, params.entry_module, req.mounts)
            if run.stop.is_set():  # an interrupt that came before the deadline was armed
                return None
            with _map_wasmtime_errors(f"cannot link {params.entry_module}"):
                for path, imported in imports:
                    name = posixpath.basename(path).removesuffix(".wasm")
                    linker.define_instance(store, name, linker.instantiate(store, imported))
                instance = linker.instantiate(store, module)
                entry = _entry_function(instance, store, params)
            with _map_wasmtime_errors(f"cannot run {params.entry_module}"):
                entry(store)  # returning normally is exit code 0
        except wasmtime.ExitTrap as exc:
            oom = exc.code != 0 and _memory_full(instance, store, req.memory_bytes)
            return RunResult(exit_code=exc.code, oom=oom)
        except wasmtime.Trap as exc:
            if exc.trap_code == wasmtime.TrapCode.INTERRUPT:
                return None
            return RunResult(
                exit_code=-1,
                error=f"wasm trap: {_describe(exc)}",
                oom=_memory_full(instance, store, req.memory_bytes),
            )
        except ExecutionFailed as exc:
            if req.memory_bytes is not None and "exceeds memory limits" in exc.message:
                return RunResult(exit_code=-1, error=exc.message, oom=True)
            raise
        return RunResult(exit_code=0)

    def _load(self, engine: wasmtime.Engine, path: str, mounts: Sequence[Mount]) -> wasmtime.Module:
        """The compiled module at task path `path`, from the cache when these bytes were seen."""
        wasm = resolve_module(path, mounts).read_bytes()
        digest = hashlib.sha256(wasm).hexdigest()
        with self._lock:
            compiled = self._cache.get(digest)
            if compiled is not None:
                self._cache.move_to_end(digest)
        with _map_wasmtime_errors(f"{path} is not a valid wasm module"):
            if compiled is not None:
                # Safe only because these bytes came from Module.serialize in this process.
                return wasmtime.Module.deserialize(engine, compiled)
            module = wasmtime.Module(engine, wasm)
            compiled = bytes(module.serialize())
        with self._lock:
            self._cache[digest] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return module


def _new_engine() -> wasmtime.Engine:
    # Every Engine must share this exact config, or cached modules would not deserialize.
    config = wasmtime.Config()
    config.epoch_interruption = True
    return wasmtime.Engine(config)


def _wasi_config(req: RunRequest, params: WasmParams) -> wasmtime.WasiConfig:
    config = wasmtime.WasiConfig()
    config.argv = [posixpath.basename(params.entry_module), *params.parameters]
    config.env = list({**req.env, **params.environment_variables}.items())
    for mount in req.mounts:
        if mount.host_path.is_dir():  # WASI can only preopen directories
            config.preopen_dir(str(mount.host_path), _guest_path(mount.target), not mount.read_only)
    config.stdout_file = str(req.stdout_path)
    config.stderr_file = str(req.stderr_path)
    return config


def _entry_function(
    instance: wasmtime.Instance, store: wasmtime.Store, params: WasmParams
) -> wasmtime.Func:
    exports = instance.exports(store)
    entry = exports.get(params.entrypoint)
    if not isinstance(entry, wasmtime.Func):
        names = ", ".join(sorted(k for k, v in exports.items() if isinstance(v, wasmtime.Func)))
        raise ExecutionFailed(
            f"{params.entry_module} exports no function {params.entrypoint!r} "
            f"(functions: {names or 'none'})",
            retryable=False,
        )
    if entry.type(store).params:
        raise ExecutionFailed(
            f"{params.entry_module}: entry function {params.entrypoint!r} must take no arguments",
            retryable=False,
        )
    return entry


def _memory_full(
    instance: wasmtime.Instance | None, store: wasmtime.Store, limit: int | None
) -> bool:
    """Whether a failed run had used its memory limit up (wasmtime reports denied grows as -1)."""
    if instance is None or limit is None:
        return False
    memory = instance.exports(store).get("memory")
    if not isinstance(memory, wasmtime.Memory):
        return False
    return bool(memory.data_len(store) + _WASM_PAGE > limit)


def _in_thread(fn: Callable[[], _T], name: str) -> asyncio.Future[_T]:
    """Run `fn` in a thread of its own: runs can last for hours and must not starve a pool."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def target() -> None:
        try:
            value = fn()
        except BaseException as exc:  # anything left unreported would hang the awaiting run
            deliver = functools.partial(_settle, future, None, exc)
        else:
            deliver = functools.partial(_settle, future, value, None)
        with contextlib.suppress(RuntimeError):  # the loop closed while we ran
            loop.call_soon_threadsafe(deliver)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def _settle(future: asyncio.Future[_T], value: _T | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)  # type: ignore[arg-type]  # None only when error is set


async def _drain(future: asyncio.Future[Any]) -> None:
    """Wait for an interrupted run's thread to end, even if cancelled meanwhile (then re-raise)."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError:
            cancelled = True
    future.exception()  # mark it retrieved: after a cancel nobody else looks at it
    if cancelled:
        raise asyncio.CancelledError


def wat_to_wasm(text: str) -> bytes:
    """Compile WebAssembly text to a binary module (for `shoal wasm run x.wat`)."""
    with _map_wasmtime_errors("compile WAT"):
        return bytes(wasmtime.wat2wasm(text))
