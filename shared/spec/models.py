"""The user's job spec as pydantic models: every field of Bacalhau's format, canonical casing."""

from __future__ import annotations

import posixpath
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from shared.constraints import Requirement, check_constraint, normalize_operator
from shared.spec.params import numbers_as_text, plain_numbers
from shared.units import parse_cpu, parse_duration, parse_gpu, parse_size

JobType = Literal["batch", "ops", "daemon", "service"]
NetworkType = Literal["None", "Full", "Host", "Bridge", "HTTP"]

_NETWORK_NAMES: dict[str, NetworkType] = {
    "none": "None",
    "": "None",
    "full": "Full",
    "host": "Host",
    "bridge": "Bridge",
    "default": "Bridge",
    "http": "HTTP",
}


class SpecModel(BaseModel):
    """Base: PascalCase aliases (the YAML's names), snake_case attributes, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers_as_text(cls, data: Any) -> Any:
        return numbers_as_text(cls, data)

    def dump(self) -> dict[str, Any]:
        """The canonical JSON-ready form, the one stored and printed by `job validate`."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


_INT64_MAX = 2**63 - 1
_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_RESULT_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def _whole_number(value: Any) -> Any:
    """Refuse booleans where a count is expected (`Count: true` is not 1)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got the boolean {str(value).lower()}")
    return value


def _absolute_path(value: str, what: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{what} {value!r} must be an absolute path inside the task")
    if ".." in value.split("/"):
        raise ValueError(f"{what} {value!r} must not contain '..'")
    return posixpath.normpath(value)


class SpecConfig(SpecModel):
    """A typed plug-in choice: `{Type, Params}` for engines, publishers and input sources."""

    type: str = Field(default="", alias="Type")
    params: dict[str, Any] = Field(default_factory=dict, alias="Params")

    @field_validator("params", mode="before")
    @classmethod
    def _none_params(cls, value: Any) -> Any:
        return {} if value is None else plain_numbers(value)

    @field_validator("type", mode="before")
    @classmethod
    def _none_type(cls, value: Any) -> Any:
        return "" if value is None else value


class Constraint(SpecModel):
    key: str = Field(alias="Key", min_length=1)
    operator: str = Field(alias="Operator")
    values: list[str] = Field(default_factory=list, alias="Values")

    @field_validator("values", mode="before")
    @classmethod
    def _scalar_values(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, list):
            return [
                str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                for v in value
            ]
        return value

    @field_validator("operator")
    @classmethod
    def _operator(cls, value: str) -> str:
        return normalize_operator(value)

    @model_validator(mode="after")
    def _shape(self) -> Constraint:
        check_constraint(self.key, self.operator, self.values)
        return self

    def requirement(self) -> Requirement:
        return Requirement(self.key, self.operator, tuple(self.values))


class InputSource(SpecModel):
    source: SpecConfig = Field(alias="Source")
    target: str = Field(alias="Target")
    alias: str = Field(default="", alias="Alias")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        return _absolute_path(value, "Target")


class ResultPath(SpecModel):
    name: str = Field(alias="Name")
    path: str = Field(alias="Path")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _RESULT_NAME_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a result name: use letters, digits, '.', '_' and '-'"
            )
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        value = _absolute_path(value, "Path")
        if value == "/":
            raise ValueError("Path '/' would publish the whole task filesystem; name a directory")
        return value


class Resources(SpecModel):
    cpu: str | None = Field(default=None, alias="CPU")
    memory: str | None = Field(default=None, alias="Memory")
    disk: str | None = Field(default=None, alias="Disk")
    gpu: str | None = Field(default=None, alias="GPU")

    @field_validator("cpu", "memory", "disk", "gpu", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cpu(value)
        return value

    @field_validator("memory", "disk")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value)
        return value

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, value: str | None) -> str | None:
        if value is not None:
            parse_gpu(value)
        return value

    @property
    def cpu_millis(self) -> int:
        return parse_cpu(self.cpu) if self.cpu else 0

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory) if self.memory else 0

    @property
    def disk_bytes(self) -> int:
        return parse_size(self.disk) if self.disk else 0

    @property
    def gpus(self) -> int:
        return parse_gpu(self.gpu) if self.gpu else 0


class Port(SpecModel):
    name: str = Field(default="", alias="Name")
    static: int | None = Field(default=None, alias="Static", ge=1, le=65535)
    target: int | None = Field(default=None, alias="Target", ge=1, le=65535)
    host_network: str = Field(default="", alias="HostNetwork")

    @field_validator("static", "target", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        return _whole_number(value)


class Network(SpecModel):
    type: NetworkType = Field(default="None", alias="Type")
    domains: list[str] = Field(default_factory=list, alias="Domains")
    ports: list[Port] = Field(default_factory=list, alias="Ports")

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if value is None:
            return "None"
        if isinstance(value, str) and value.strip().lower() in _NETWORK_NAMES:
            return _NETWORK_NAMES[value.strip().lower()]
        return value

    @model_validator(mode="after")
    def _domains(self) -> Network:
        if self.domains and self.type != "HTTP":
            raise ValueError(f"Domains only apply to Network Type HTTP, not {self.type}")
        return self


class Timeouts(SpecModel):
    queue_timeout: float = Field(default=0, alias="QueueTimeout")
    execution_timeout: float = Field(default=0, alias="ExecutionTimeout")
    total_timeout: float = Field(default=0, alias="TotalTimeout")

    @field_validator("queue_timeout", "execution_timeout", "total_timeout", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        if value is None:
            return 0
        if isinstance(value, bool):
            raise ValueError("expected seconds or a duration such as 90s or 5m")
        if isinstance(value, (str, int, float)):
            return parse_duration(value)
        return value


class Task(SpecModel):
    name: str = Field(default="main", alias="Name")
    engine: SpecConfig = Field(alias="Engine")
    publisher: SpecConfig = Field(default_factory=SpecConfig, alias="Publisher")
    env: dict[str, str] = Field(default_factory=dict, alias="Env")
    meta: dict[str, str] = Field(default_factory=dict, alias="Meta")
    input_sources: list[InputSource] = Field(default_factory=list, alias="InputSources")
    result_paths: list[ResultPath] = Field(default_factory=list, alias="ResultPaths")
    resources: Resources = Field(default_factory=Resources, alias="Resources")
    network: Network = Field(default_factory=Network, alias="Network")
    timeouts: Timeouts = Field(default_factory=Timeouts, alias="Timeouts")

    @field_validator("name", mode="before")
    @classmethod
    def _default_name(cls, value: Any) -> Any:
        return "main" if value in (None, "") else value

    @field_validator("env", "meta", mode="before")
    @classmethod
    def _string_map(cls, value: Any) -> Any:
        return _stringify_map(value)

    @field_validator("publisher", "resources", "network", "timeouts", mode="before")
    @classmethod
    def _none_block(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("input_sources", "result_paths", mode="before")
    @classmethod
    def _none_list(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("result_paths")
    @classmethod
    def _unique_names(cls, value: list[ResultPath]) -> list[ResultPath]:
        _refuse_repeats([r.name for r in value], "names")
        return value

    @field_validator("input_sources")
    @classmethod
    def _unique_targets(cls, value: list[InputSource]) -> list[InputSource]:
        _refuse_repeats([s.target for s in value], "targets")
        return value


def _refuse_repeats(items: list[str], what: str) -> None:
    dupes = sorted({n for n in items if items.count(n) > 1})
    if dupes:
        raise ValueError(f"{what} must be unique; repeated: {', '.join(dupes)}")


def _stringify_map(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {
            str(k): ""
            if v is None
            else str(v).lower()
            if isinstance(v, bool)
            else str(v)
            if isinstance(v, (int, float))
            else v
            for k, v in value.items()
        }
    return value


class JobSpec(SpecModel):
    """A whole job as the user wrote it, after defaults. `ID` is set by the orchestrator."""

    id: str | None = Field(default=None, alias="ID")
    name: str = Field(default="", alias="Name")
    type: JobType = Field(default="batch", alias="Type")
    namespace: str = Field(default="default", alias="Namespace")
    priority: int = Field(default=0, alias="Priority", ge=0, le=_INT64_MAX)
    count: int | None = Field(default=None, alias="Count", le=_INT64_MAX)
    meta: dict[str, str] = Field(default_factory=dict, alias="Meta")
    labels: dict[str, str] = Field(default_factory=dict, alias="Labels")
    constraints: list[Constraint] = Field(default_factory=list, alias="Constraints")
    tasks: list[Task] = Field(alias="Tasks", min_length=1, max_length=1)

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if value is None or value == "":
            return "batch"
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("namespace", mode="before")
    @classmethod
    def _default_namespace(cls, value: Any) -> Any:
        return "default" if value in (None, "") else value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a namespace: use letters, digits, '_' and '-'")
        return value

    @field_validator("priority", "count", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        return _whole_number(value)

    @field_validator("name", mode="before")
    @classmethod
    def _none_str(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("meta", "labels", mode="before")
    @classmethod
    def _string_map(cls, value: Any) -> Any:
        return _stringify_map(value)

    @field_validator("constraints", mode="before")
    @classmethod
    def _none_list(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("count", mode="after")
    @classmethod
    def _count(cls, value: int | None, info: ValidationInfo) -> int | None:
        job_type = info.data.get("type", "batch")
        if job_type in ("ops", "daemon"):
            if value is not None:
                raise ValueError(
                    f"Count is not allowed for {job_type} jobs: they run on every "
                    "matching node; remove Count"
                )
        elif value is not None and value < 1:
            raise ValueError(f"must be at least 1 for {job_type} jobs, got {value}")
        return value

    @model_validator(mode="after")
    def _default_count(self) -> JobSpec:
        if self.count is None and self.type in ("batch", "service"):
            object.__setattr__(self, "count", 1)
        return self

    @property
    def task(self) -> Task:
        return self.tasks[0]

    def requirements(self) -> list[Requirement]:
        return [c.requirement() for c in self.constraints]
