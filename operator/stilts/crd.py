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


STATUS_SCHEMA = {
    "type": "object",
    "description": "Written by the operator. kopf keeps its own bookkeeping here too, so unknown fields stay.",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "phase": {"type": "string", "enum": ["Pending", "Running", "Succeeded", "Failed"]},
        "progress": {"type": "string", "description": "Jobs succeeded / planned."},
        "observedGeneration": {"type": "integer", "format": "int64"},
    },
}


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
                "additionalPrinterColumns": [
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": S.ExperimentSpec.__doc__.strip(),
                    "required": ["spec"],
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
