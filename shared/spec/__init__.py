"""The user's job spec: models, typed params, and the loader from YAML/JSON text."""

from shared.spec.loader import (
    dump_yaml,
    load_spec,
    parse_document,
    spec_from_canonical,
    spec_from_data,
)
from shared.spec.models import (
    Constraint,
    InputSource,
    JobSpec,
    JobType,
    Network,
    Resources,
    ResultPath,
    SpecConfig,
    Task,
    Timeouts,
)

__all__ = [
    "Constraint",
    "InputSource",
    "JobSpec",
    "JobType",
    "Network",
    "Resources",
    "ResultPath",
    "SpecConfig",
    "Task",
    "Timeouts",
    "dump_yaml",
    "load_spec",
    "parse_document",
    "spec_from_canonical",
    "spec_from_data",
]
