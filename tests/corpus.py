"""Where the tests find job specs: the project's own fixtures, and the reference corpus.

`tests/fixtures/specs/` holds specs written for this project (each says at its top what it
exercises; `invalid/` holds the ones that must be refused). They are in the repository, so
the tests on them run everywhere.

The Bacalhau compatibility corpus is third-party text and never in the repository: the
environment variable SHOAL_COMPAT_CORPUS names its folder (.ci/run points it at
../shared/compat/bacalhau-specs, the team folder beside the checkout). The Bacalhau job-type
seeds are read from that team folder too (`seeds/` two levels above the corpus). A test that
reads either skips without it, with the reason, and fails under CI=true (`require`).
Collection never reads them: a test is parametrized over `corpus_names()`, which stands in a
single placeholder when the corpus is absent, and reads a file only through `corpus_text()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from shared.spec import JobSpec, load_spec
from tests.conftest import require

CORPUS_ENV = "SHOAL_COMPAT_CORPUS"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "specs"
INVALID = FIXTURES / "invalid"
SPEC_SUFFIXES = (".yaml", ".yml", ".json")
#: The one parameter a corpus test gets when there is no corpus: its test skips (or fails).
CORPUS_ABSENT = "corpus-absent"
SEEDS_FILE = "bacalhau-job-types.md"

#: The template variables each templated fixture needs (`-V` values; optional ones left out).
FIXTURE_VARIABLES: dict[str, dict[str, str]] = {
    "batch-local-publisher-env-template.yaml": {"script": "cHJpbnQoJ2Fob3knKQ=="},
    "batch-s3-templated-input.yaml": {
        "CatchBucket": "fixture-catches",
        "CatchPrefix": "landings/",
        "CatchRegion": "eu-west-3",
    },
    "batch-url-and-local-inputs.yaml": {
        "weights_url": "https://models.example.org/fish-v5.bin",
        "frames_bucket": "sonar-frames",
        "species": "cod",
        "weights_file": "fish-v5.bin",
        "api_secret": "hunter2",
    },
    "commented-daemon.yaml": {
        "query": "SELECT 1",
        "SinkURL": "https://sink.example.org",
        "ArchiveBucket": "harbour-archive",
        "ArchiveRegion": "eu-west-1",
    },
    "commented-ops.yaml": {"query": "SELECT count(*) FROM moorings"},
    "ops-gpu.yaml": {"epochs": "12", "results_bucket": "reef-results"},
    "ops-query-template.yaml": {"query": "SELECT 1"},
    "ops-s3-publisher.yaml": {"Sea": "baltic", "Days": "30"},
    "service-host-network.yaml": {"upstream": "https://upstream.example.org/queue"},
    "wasm-ops-default-variable.yaml": {},
    "wasm-templated-count.yaml": {"replicas": "3"},
}


# ---- the project's fixtures ---------------------------------------------------------------------


def _specs_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in SPEC_SUFFIXES)


def fixture_names() -> list[str]:
    """The valid fixtures (every one must load, given its FIXTURE_VARIABLES)."""
    return _specs_in(FIXTURES)


def invalid_fixture_names() -> list[str]:
    """The fixtures that must be refused, with their problems (`invalid/`)."""
    return _specs_in(INVALID)


def fixture_path(name: str) -> Path:
    path = FIXTURES / name
    assert path.is_file(), f"no fixture {name} in {FIXTURES}"
    return path


def fixture_text(name: str) -> str:
    return fixture_path(name).read_text(encoding="utf-8")


def fixture_spec(name: str, **extra: str) -> JobSpec:
    """A fixture loaded with the variables it needs (and `extra` ones)."""
    variables = {**FIXTURE_VARIABLES.get(name, {}), **extra}
    return load_spec(fixture_text(name), variables, source=name)


# ---- the reference corpus (outside the repository) ----------------------------------------------


def _corpus_problem() -> tuple[Path | None, str]:
    value = os.environ.get(CORPUS_ENV, "").strip()
    if not value:
        return None, (
            f"needs the Bacalhau reference corpus: set {CORPUS_ENV} to its folder "
            "(.ci/run sets it to ../shared/compat/bacalhau-specs)"
        )
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        return None, f"needs the Bacalhau reference corpus: {CORPUS_ENV}={value} is not a folder"
    return path, ""


def corpus_dir() -> Path | None:
    """The corpus folder, or None; never skips (for collection-time decisions)."""
    return _corpus_problem()[0]


def require_corpus() -> Path:
    """The corpus folder; skips the test without it, fails it under CI=true."""
    path, why = _corpus_problem()
    require(path is not None, why)
    assert path is not None
    return path


def corpus_names(keep: Callable[[str], bool] = lambda name: True) -> list[str]:
    """The corpus's spec files to parametrize over, or [CORPUS_ABSENT] without a corpus."""
    folder = corpus_dir()
    if folder is None:
        return [CORPUS_ABSENT]
    return [name for name in _specs_in(folder) if keep(name)]


def corpus_path(name: str) -> Path:
    return require_corpus() / name


def corpus_text(name: str) -> str:
    return corpus_path(name).read_text(encoding="utf-8")


def seeds_path() -> Path:
    """The Bacalhau job-type seeds, in the team folder that holds the corpus."""
    seeds = require_corpus().parents[1] / "seeds" / SEEDS_FILE
    require(seeds.is_file(), f"needs the Bacalhau job-type seeds at {seeds}")
    return seeds
