import yaml

from stilts import crd, spec as S
from tests.conftest import REPO

COMMITTED = REPO / "crds" / "stilts.dev_transferexperiments.yaml"


def test_committed_crd_matches_the_spec_model():
    assert COMMITTED.read_text() == crd.render(), "crds/ drifted from operator/stilts/spec.py: run `make crd`"


def walk(node, path="spec"):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], path + "[]")


def test_schema_is_structural_and_documented():
    doc = yaml.safe_load(COMMITTED.read_text())
    version = doc["spec"]["versions"][0]
    assert doc["spec"]["names"]["shortNames"] == ["tx"] and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Done", "Running", "Waiting",
                                                                         "Failed", "Seeds", "Answer", "Age", "Message"]
    schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, node in walk(schema):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "$ref" not in node and "anyOf" not in node, path
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: unbounded list (CEL cost)"
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node or path.endswith(("]", "nodeSelector")), f"{path}: unbounded string"
    described = [p for p, n in walk(schema) if "description" in n]
    assert len(described) > 60


def test_every_cel_rule_is_in_the_crd():
    schema = yaml.safe_load(COMMITTED.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    in_crd = {(v["rule"], v["message"]) for _, node in walk(schema) for v in node.get("x-kubernetes-validations", [])}
    for _, rule, message in S.RULES:
        assert (rule, message) in in_crd, message


def test_status_is_declared_for_kubectl_explain():
    """Every status field the operator writes has a type and a description; nothing is left to pruning."""
    from stilts.status import invalid, summarize
    from stilts.plan import plan
    status_schema = yaml.safe_load(COMMITTED.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["status"]
    assert not status_schema.get("x-kubernetes-preserve-unknown-fields")
    jobs = plan(S.parse_spec({"dataSource": "synthetic", "backbones": [{"name": "d", "model": "stilts/tiny-xlmr",
                                                                        "gpusPerWorker": 0}], "seeds": [1]}))
    records = {j.hash: {"state": "Failed", "attempts": 2, "reason": "BadInput", "message": "m", "since": 0}
               for j in jobs}
    for status in (summarize(jobs, records, {}, 1, 0) | {"jobsConfigMap": "a", "resultsConfigMap": "b"},
                   invalid("bad", {}, 1, 0)):
        for key in status:
            assert key in status_schema["properties"], key
            assert "description" in status_schema["properties"][key] or key == "conditions", key
    conditions = status_schema["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
