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
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Progress", "Age"]
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
