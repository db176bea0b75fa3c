"""Which namespace an API request is about: its subject's, and what a request may name."""

from __future__ import annotations

from shared.errors import InvalidSpec, Problem
from shared.spec import JobSpec


def request_namespace(scope: str | None, asked: str) -> str | None:
    """The namespace a request may see: its subject's; on the cluster subject, the one its
    body names, or every namespace (None)."""
    if scope is None:
        return asked or None
    if asked and asked != scope:
        raise InvalidSpec(
            [
                Problem(
                    "Namespace", f"asks about namespace {asked!r} on namespace {scope!r}'s subject"
                )
            ]
        )
    return scope


def in_scope(spec: JobSpec, scope: str | None) -> JobSpec:
    """The spec in the namespace of the subject it was submitted on. A spec naming another
    namespace is refused: its user may not be allowed there."""
    if scope is None or spec.namespace == scope:
        return spec
    if "namespace" in spec.model_fields_set:
        raise InvalidSpec(
            [
                Problem(
                    "Namespace",
                    f"Namespace {spec.namespace!r} is not {scope!r}, the namespace this submit "
                    f"was sent to; submit it with --namespace {spec.namespace} (if you may), "
                    "or leave Namespace out",
                )
            ]
        )
    return spec.model_copy(update={"namespace": scope})
