"""The Kubernetes API calls the operator makes, read from its source (ast), as RBAC triples.

Calls whose resource is the job backend's (`b.group`, `BACKEND.plural`, `self.backend.version`, ...)
are expanded for the backend asked for, so the chart's rules can be checked for each backend."""

from __future__ import annotations

import ast
import re

from stilts import backends, manifests, spec
from tests.conftest import REPO

SOURCE = REPO / "operator" / "stilts" / "operator.py"
VERBS = {"create": "create", "read": "get", "get": "get", "list": "list", "patch": "patch", "delete": "delete",
         "replace": "update"}
CORE_PLURALS = {"config_map": "configmaps", "persistent_volume_claim": "persistentvolumeclaims", "pod": "pods",
                "pod_log": "pods/log",
                "event": "events", "secret": "secrets", "service": "services"}
# kopf keeps handler progress on the object: handlers of create/update/resume patch it.
PATCHING_HANDLERS = {"create", "update", "resume", "delete", "timer"}
# kopf itself lists and watches CRDs cluster-wide to discover resources (kopf's sample RBAC has it too).
KOPF_OWN = {("apiextensions.k8s.io", "customresourcedefinitions", "list"),
            ("apiextensions.k8s.io", "customresourcedefinitions", "watch")}
BACKEND_OWNERS = {"b", "BACKEND", "self.backend", "backend"}


def _value(node, backend: backends.Backend):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return getattr(spec, node.id)
    if isinstance(node, ast.Attribute):
        owner = ast.unparse(node.value)
        if owner == "manifests":
            return getattr(manifests, node.attr)
        if owner in BACKEND_OWNERS:
            return getattr(backend, node.attr)
    raise ValueError(ast.dump(node))


def required(backend_name: str = "pytorchjob") -> set[tuple[str, str, str]]:
    backend = backends.get(backend_name)
    tree = ast.parse(SOURCE.read_text())
    out: set[tuple[str, str, str]] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        owner = ast.unparse(node.func.value)
        if owner == "kopf" and name == "event":  # kopf posts Events for us
            out.add(("", "events", "create"))
            continue
        if owner in ("kopf.on", "kopf") and name in ("create", "update", "resume", "delete", "event", "timer"):
            group, _, plural = (_value(a, backend) for a in node.args[:3])
            out |= {(group, plural, "list"), (group, plural, "watch")}
            if name in PATCHING_HANDLERS:
                out.add((group, plural, "patch"))
            continue
        match = re.match(r"(create|read|get|list|patch|delete|replace)_(?:namespaced|cluster)_(\w+?)(_status)?$",
                         name)
        if not match:
            continue
        verb, kind, status = VERBS[match[1]], match[2], match[3]
        if kind == "custom_object":
            group = _value(node.args[0], backend)
            plural = _value(node.args[3] if "namespaced" in name else node.args[2], backend)
        else:
            group, plural = "", CORE_PLURALS[kind]
        out.add((group, plural + ("/status" if status else ""), verb))
    return out
