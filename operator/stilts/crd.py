"""The TransferExperiment CRD, generated from spec.py (`make crd` writes crds/; a test checks drift)."""

from __future__ import annotations

import copy

import yaml

from . import spec as S

# Fields of a JSON schema that a Kubernetes structural schema keeps.
_KEEP = {"type", "description", "default", "enum", "minimum", "maximum", "minLength", "maxLength", "pattern",
         "minItems", "maxItems", "items", "properties", "required", "additionalProperties", "nullable", "format"}


def _convert(node: dict, defs: dict) -> dict:
    """Pydantic JSON Schema (2020-12) -> OpenAPI v3.0 structural schema."""
    node = copy.deepcopy(node)
    if "$ref" in node:
        ref = defs[node.pop("$ref").split("/")[-1]]
        node = {**copy.deepcopy(ref), **node}
    if "anyOf" in node:  # Optional[X] -> X, nullable; the outer node adds description/default
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        outer = _convert(node, defs)
        return {**_convert(options[0], defs), **outer, "nullable": True}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    out: dict = {}
    for key, value in node.items():
        if key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out["properties"] = {k: _convert(v, defs) for k, v in value.items()}
            for name, child in out["properties"].items():
                # An omitted sub-object still gets its fields' defaults from the API server.
                if (child.get("type") == "object" and "properties" in child and not child.get("nullable")
                        and name not in node.get("required", []) and "default" not in child):
                    child["default"] = {}
        elif key == "items":
            out["items"] = _convert(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):  # a map; `false` is implied by pruning in structural schemas
                out["additionalProperties"] = _convert(value, defs)
        elif key == "default" and value is None:
            continue
        elif key in _KEEP:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string" if all(isinstance(v, str) for v in out["enum"]) else "integer"
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _at(schema: dict, path: str) -> dict:
    if not path:
        return schema
    if path.endswith("[]"):
        return schema["properties"][path[:-2]]["items"]
    return schema["properties"][path]


def spec_schema() -> dict:
    raw = S.ExperimentSpec.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _convert(raw, defs)
    schema["type"] = "object"
    for path, rule, message in S.RULES:
        target = _at(schema, path)
        target.setdefault("x-kubernetes-validations", []).append(
            {"rule": rule, "message": message})
    return schema


def _obj(description: str, properties: dict, **extra) -> dict:
    return {"type": "object", "description": description, "properties": properties, **extra}


_STR, _INT = {"type": "string"}, {"type": "integer", "format": "int64"}
_COUNTS = _obj("Jobs per state.", {state: {**_INT, "description": d} for state, d in (
    ("Pending", "Not started: waiting for parents or for room under maxConcurrentJobs."),
    ("Queued", "Created and held by a queue (Kueue) until admitted."),
    ("Starting", "Created, pods not all running yet (scheduling, image pull)."),
    ("Running", "All pods running."),
    ("Backoff", "A failed attempt, waiting to retry."),
    ("Succeeded", "Finished with a valid summary."),
    ("Failed", "Failed for good (retries exhausted, or a permanent failure)."),
    ("Blocked", "Cannot run: a job it depends on failed."))})
_JOB_NOTE = {"job": {**_STR, "description": "backbone-task-seed-phase"},
             "reason": {**_STR, "description": "One CamelCase word: BadInput, Unschedulable, ImagePullBackOff, ..."},
             "message": {**_STR, "description": "What the trainer or Kubernetes said."}}

STATUS_SCHEMA = _obj(
    "Written by the operator: a bounded summary. Per-job records are in the ConfigMap jobsConfigMap, results in "
    "resultsConfigMap; `stilts status NAME` and `stilts report tx/NAME` read them.", {
        "phase": {"type": "string", "enum": ["Pending", "Running", "Succeeded", "Failed"],
                  "description": "Pending: nothing created yet; Running: jobs left to run; Succeeded: every job "
                  "succeeded; Failed: nothing left to run and some job failed (or the spec is invalid)."},
        "progress": {**_STR, "description": "Jobs succeeded / planned."},
        "running": {**_INT, "description": "Jobs whose pods all run."},
        "waiting": {**_INT, "description": "Jobs created but not running: starting or queued."},
        "queued": {**_INT, "description": "Jobs held by a queue (Kueue)."},
        "failed": {**_INT, "description": "Jobs failed for good, and jobs blocked by them."},
        "message": {**_STR, "description": "What needs attention, in one line."},
        "counts": _COUNTS,
        "failures": {"type": "array", "maxItems": 10, "description": "The first failed jobs (all: stilts status).",
                     "items": _obj("A failed job.", {**_JOB_NOTE, "attempts": _INT})},
        "waitingJobs": {"type": "array", "maxItems": 10, "description": "The longest-waiting jobs that do not run yet.",
                        "items": _obj("A job waiting to run.", {**_JOB_NOTE, "state": _STR,
                                                                "since": {**_STR, "format": "date-time"}})},
        "observedGeneration": {**_INT, "description": "The spec generation this status describes."},
        "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                       "description": "Ready (every job succeeded), Progressing (jobs left to run), Degraded "
                       "(jobs failed).",
                       "items": _obj("A condition, as the Kubernetes API conventions define it.", {
                           "type": _STR, "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                           "reason": _STR, "message": _STR, "observedGeneration": _INT,
                           "lastTransitionTime": {**_STR, "format": "date-time"}},
                           required=["type", "status"])},
        "answer": _obj("The sequential design (spec.answer) as it runs.", {
            "look": {**_INT, "description": "Looks taken so far."},
            "seeds": {**_INT, "description": "Seeds planned so far."},
            "maxSeeds": _INT,
            "targetHalfWidth": {"type": "number", "description": "Points: the half-width that answers a comparison."},
            "halfWidth": {"type": "number", "nullable": True, "description": "Points: the widest 95% half-width "
                          "(adjusted for the looks) of a comparison not yet decided, at the last look."},
            "decision": {**_STR, "description": "continue, decided, precise enough or budget reached."},
            "summary": {**_STR, "description": "One line for kubectl get."},
            "comparisons": {"type": "object", "description": "Per comparison at the last look: halfWidth, decided.",
                            "additionalProperties": _obj("A comparison at the last look.", {
                                "halfWidth": {"type": "number", "nullable": True}, "decided": {"type": "boolean"}})},
        }),
        "jobsConfigMap": {**_STR, "description": "ConfigMap holding every job's record (state, attempts, reason)."},
        "resultsConfigMap": {**_STR, "description": "ConfigMap holding each finished job's compact summary."},
    })

COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Done", "type": "string", "jsonPath": ".status.progress", "description": "Jobs succeeded / planned"},
    {"name": "Running", "type": "integer", "jsonPath": ".status.running"},
    {"name": "Waiting", "type": "integer", "jsonPath": ".status.waiting", "description": "Starting or queued"},
    {"name": "Failed", "type": "integer", "jsonPath": ".status.failed"},
    {"name": "Seeds", "type": "integer", "jsonPath": ".status.answer.seeds",
     "description": "Seeds planned so far by the sequential design"},
    {"name": "Answer", "type": "string", "jsonPath": ".status.answer.summary",
     "description": "The sequential design: its last look's widest open half-width against the target, or why "
                    "it stopped"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message"},
]
NAME_RULE = {"rule": "size(self.metadata.name) <= 40",
             "message": "metadata.name: at most 40 characters (it names the experiment's jobs and labels)"}


def crd() -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{S.PLURAL}.{S.GROUP}"},
        "spec": {
            "group": S.GROUP,
            "names": {"kind": S.KIND, "listKind": f"{S.KIND}List", "plural": S.PLURAL,
                      "singular": S.KIND.lower(), "shortNames": [S.SHORT], "categories": ["stilts"]},
            "scope": "Namespaced",
            "versions": [{
                "name": S.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": COLUMNS,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": S.ExperimentSpec.__doc__.strip(),
                    "required": ["spec"],
                    "x-kubernetes-validations": [NAME_RULE],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema(),
                        "status": STATUS_SCHEMA,
                    },
                }},
            }],
        },
    }


def render() -> str:
    header = "# Generated from operator/stilts/spec.py by `make crd`; do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120, allow_unicode=True)
