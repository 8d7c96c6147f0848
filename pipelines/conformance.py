"""Rules of the real KFP backend that kfp.local does not enforce, checked on compiled YAML.

Runtime placeholders (`dsl.PIPELINE_JOB_ID_PLACEHOLDER` and friends) are replaced by
the backend's driver only when they are a task input's WHOLE string value:
kubeflow/pipelines backend/src/v2/driver/resolve.go (`resolveInputParameter`, a
`switch valStr` on the exact strings; true at 2.17 and on master, commit 7b70c7b,
2026-08-21). Only `{{$.workspace_path}}` is replaced inside longer strings.
kfp.local substitutes them anywhere, so a pipeline can pass every local run and
still hand a literal `{{$.pipeline_job_uuid}}` to its steps on a cluster, which is
how every run came to share one checkpoint folder (issue 9).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

# The values resolve.go replaces, each only as a whole value.
WHOLE_VALUE_PLACEHOLDERS = frozenset(
    {
        "{{$.pipeline_job_name}}",
        "{{$.pipeline_job_resource_name}}",
        "{{$.pipeline_job_uuid}}",
        "{{$.pipeline_task_name}}",
        "{{$.pipeline_task_uuid}}",
        "{{$.pipeline_job_create_time_utc}}",
        "{{$.pipeline_job_schedule_time_utc}}",
    }
)
SUBSTRING_PLACEHOLDERS = ("{{$.workspace_path}}",)
_PLACEHOLDER = re.compile(r"\{\{\$\.[a-z_]+\}\}")


def _constants(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every task input constant and parameter default of the spec, with where it sits.

    Defaults are never substituted at all, so a placeholder there is always wrong.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}" if where else key
            if key == "runtimeValue" and isinstance(value, dict) and "constant" in value:
                yield here, value["constant"]
            elif key == "defaultValue":
                yield here, {"default": value}
            else:
                yield from _constants(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _constants(value, f"{where}[{i}]")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def backend_conformance_problems(spec: dict[str, Any]) -> list[str]:
    """What the real backend would pass to a step unsubstituted (an empty list = fine)."""
    problems = []
    for where, constant in _constants(spec, ""):
        whole = isinstance(constant, str) and constant in WHOLE_VALUE_PLACEHOLDERS
        for text in _strings(constant):
            rest = text
            for allowed in SUBSTRING_PLACEHOLDERS:
                rest = rest.replace(allowed, "")
            found = _PLACEHOLDER.findall(rest)
            if found and not whole:
                problems.append(
                    f"{where}: {text!r} embeds {', '.join(found)}; the KFP backend substitutes "
                    "runtime placeholders only as a whole parameter value"
                )
    return problems
