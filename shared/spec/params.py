"""Typed parameters of each engine, publisher and input source type that Shoal knows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_CONFIG = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _strings(value: Any) -> Any:
    """YAML turns `- 5` into an int and an empty template render into None; argv wants strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [_scalar(v) for v in value]
    return value


def _scalar(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _string_map(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: _scalar(v) for k, v in value.items()}
    return value


def _text(value: Any) -> Any:
    """A number given where text is expected (`Name: 2024`), as text (as Go's YAML does)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # YAML numbers print as written: see shared.spec.loader
    return value


def plain_numbers(value: Any) -> Any:
    """`value` with plain ints and floats (the YAML loader's remember their text)."""
    if isinstance(value, dict):
        return {k: plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_numbers(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and type(value) is not int:
        return int(value)
    if isinstance(value, float) and type(value) is not float:
        return float(value)
    return value


_TEXT_SHAPES: dict[type[BaseModel], dict[str, str]] = {}
_SHAPE_OF: dict[Any, str] = {
    str: "one",
    str | None: "one",
    list[str]: "list",
    dict[str, str]: "map",
}


def numbers_as_text(model: type[BaseModel], data: Any) -> Any:
    """Turn numbers into text in the fields of `model` that hold text (by their aliases)."""
    if not isinstance(data, dict):
        return data
    shapes = _TEXT_SHAPES.get(model)
    if shapes is None:
        shapes = _TEXT_SHAPES[model] = {
            field.alias or name: _SHAPE_OF[field.annotation]
            for name, field in model.model_fields.items()
            if field.annotation in _SHAPE_OF
        }
    if all(_is_text(data[key], shape) for key, shape in shapes.items() if key in data):
        return data  # the usual case (a canonical spec): nothing to copy
    out = {}
    for key, value in data.items():
        shape = shapes.get(key)
        if shape == "one":
            value = _text(value)
        elif shape == "list" and isinstance(value, list):
            value = [_text(v) for v in value]
        elif shape == "map" and isinstance(value, dict):
            value = {k: _text(v) for k, v in value.items()}
        out[key] = value
    return out


def _is_text(value: Any, shape: str) -> bool:
    if shape == "one":
        return value is None or type(value) is str
    if shape == "list":
        return type(value) is list and all(type(v) is str for v in value)
    return type(value) is dict and all(type(v) is str for v in value.values())


class Params(BaseModel):
    """Base of every typed params block: canonical PascalCase aliases, unknown keys refused."""

    model_config = _CONFIG

    @model_validator(mode="before")
    @classmethod
    def _numbers_as_text(cls, data: Any) -> Any:
        return numbers_as_text(cls, data)


class DockerParams(Params):
    image: str = Field(alias="Image", min_length=1)
    entrypoint: list[str] = Field(default_factory=list, alias="Entrypoint")
    parameters: list[str] = Field(default_factory=list, alias="Parameters")
    working_directory: str = Field(default="", alias="WorkingDirectory")
    environment_variables: list[str] = Field(default_factory=list, alias="EnvironmentVariables")
    meta: dict[str, str] = Field(default_factory=dict, alias="Meta")

    @field_validator("entrypoint", "parameters", "environment_variables", mode="before")
    @classmethod
    def _to_strings(cls, value: Any) -> Any:
        return _strings(value)

    @field_validator("meta", mode="before")
    @classmethod
    def _meta(cls, value: Any) -> Any:
        return _string_map(value)

    @field_validator("environment_variables")
    @classmethod
    def _env_pairs(cls, value: list[str]) -> list[str]:
        for item in value:
            if "=" not in item or not item.split("=", 1)[0].strip():
                raise ValueError(f"{item!r} is not KEY=VALUE")
        return value

    def env(self) -> dict[str, str]:
        """`K=V` and `K = V` (the seeds use both) as a mapping."""
        out: dict[str, str] = {}
        for item in self.environment_variables:
            key, _, value = item.partition("=")
            out[key.strip()] = value.strip() if key != key.rstrip() else value
        return out


class WasmParams(Params):
    entry_module: str = Field(alias="EntryModule", min_length=1)
    entrypoint: str = Field(default="_start", alias="Entrypoint")
    parameters: list[str] = Field(default_factory=list, alias="Parameters")
    environment_variables: dict[str, str] = Field(
        default_factory=dict, alias="EnvironmentVariables"
    )
    import_modules: list[str] = Field(default_factory=list, alias="ImportModules")
    meta: dict[str, str] = Field(default_factory=dict, alias="Meta")

    @field_validator("parameters", "import_modules", mode="before")
    @classmethod
    def _to_strings(cls, value: Any) -> Any:
        return _strings(value)

    @field_validator("meta", mode="before")
    @classmethod
    def _meta(cls, value: Any) -> Any:
        return _string_map(value)

    @field_validator("environment_variables", mode="before")
    @classmethod
    def _env_any(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, list):  # accept the docker-style list form too
            items = [str(_scalar(v)) for v in value]
            pairs = [item.partition("=") for item in items]
            bad = [i for i, (k, eq, _) in zip(items, pairs, strict=True) if not (eq and k.strip())]
            if bad:
                raise ValueError(f"{bad[0]!r} is not KEY=VALUE")
            return {k.strip(): v.strip() for k, _, v in pairs}
        if isinstance(value, dict):
            return {k: _scalar(v) for k, v in value.items()}
        return value

    @field_validator("entrypoint", mode="before")
    @classmethod
    def _default_entry(cls, value: Any) -> Any:
        return "_start" if value in (None, "") else value


class NoopParams(Params):
    """The test/benchmark engine: sleep, then print and exit with the given code."""

    sleep: float | str = Field(default=0, alias="Sleep")
    exit_code: int = Field(default=0, alias="ExitCode", ge=0, le=255)

    @field_validator("exit_code", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("ExitCode must be a whole number, not a boolean")
        return value

    stdout: str = Field(default="", alias="Stdout")
    stderr: str = Field(default="", alias="Stderr")
    error: str = Field(default="", alias="Error")

    @field_validator("sleep")
    @classmethod
    def _sleep(cls, value: float | str) -> float | str:
        if isinstance(value, str):
            if value.strip().lower() == "forever":
                return "forever"
            try:
                value = float(value)
            except ValueError:
                raise ValueError("Sleep must be a number of seconds or 'forever'") from None
        if value < 0:
            raise ValueError("Sleep must not be negative")
        return value

    @property
    def forever(self) -> bool:
        return self.sleep == "forever"


class LocalDirectorySource(Params):
    source_path: str = Field(alias="SourcePath", min_length=1)
    read_write: bool = Field(default=False, alias="ReadWrite")


class URLSource(Params):
    url: str = Field(alias="URL", min_length=1)


class InlineSource(Params):
    url: str = Field(alias="URL", min_length=1)

    @field_validator("url")
    @classmethod
    def _data_url(cls, value: str) -> str:
        if not value.startswith("data:"):
            raise ValueError("an inline source's URL must be an RFC 2397 data: URL")
        return value


class S3Source(Params):
    bucket: str = Field(alias="Bucket", min_length=1)
    key: str = Field(default="", alias="Key")
    filter: str = Field(default="", alias="Filter")
    region: str = Field(default="", alias="Region")
    endpoint: str = Field(default="", alias="Endpoint")
    version_id: str = Field(default="", alias="VersionID")


class IPFSSource(Params):
    cid: str = Field(alias="CID", min_length=1)


class S3Publisher(Params):
    bucket: str = Field(alias="Bucket", min_length=1)
    key: str = Field(default="", alias="Key")
    region: str = Field(default="", alias="Region")
    endpoint: str = Field(default="", alias="Endpoint")
    encoding: str = Field(default="gzip", alias="Encoding")

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        if value.lower() not in ("gzip", "plain"):
            raise ValueError(f"{value!r} is not an encoding: use gzip or plain")
        return value


class EmptyParams(Params):
    """Publishers and engines that take no parameters (local, ipfs, nats, noop)."""


class NatsPublisher(Params):
    bucket: str = Field(default="", alias="Bucket")


ENGINE_PARAMS: dict[str, type[Params]] = {
    "docker": DockerParams,
    "wasm": WasmParams,
    "noop": NoopParams,
}

SOURCE_PARAMS: dict[str, type[Params]] = {
    "localdirectory": LocalDirectorySource,
    "urldownload": URLSource,
    "inline": InlineSource,
    "s3": S3Source,
    "ipfs": IPFSSource,
}
SOURCE_ALIASES = {
    "local": "localDirectory",
    "url": "urlDownload",
    "localdirectory": "localDirectory",
    "urldownload": "urlDownload",
    "inline": "inline",
    "s3": "s3",
    "ipfs": "ipfs",
}

PUBLISHER_PARAMS: dict[str, type[Params]] = {
    "nats": NatsPublisher,
    "local": EmptyParams,
    "ipfs": EmptyParams,
    "noop": EmptyParams,
    "s3": S3Publisher,
}
