#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, the Kubeflow training
# operator, the Kubeflow Trainer v2 controller, JobSet and Kueue) from the Go module proxy into a cache outside the repo, keyed by version: a binary is
# rebuilt only when its version in versions.env changes. Prints the bin directory on stdout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${STILTS_CACHE_DIR:-$HOME/.cache/stilts}/controlplane"
bin="$cache/bin"
mkdir -p "$bin"
command -v go >/dev/null || { echo "build.sh: Go is not installed (need Go >= 1.26 to build the test control plane)" >&2; exit 2; }

# build NAME VERSION MODULE_DIR PACKAGE [LDFLAGS]: one binary, skipped when the stamp matches.
build() {
  local name=$1 version=$2 dir=$3 pkg=$4 ldflags=${5:-}
  local stamp="$bin/.$name.version"
  if [[ -x "$bin/$name" && "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then return 0; fi
  echo "building $name $version ..." >&2
  local start=$SECONDS
  (cd "$here/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$version" > "$stamp"
  echo "built $name in $((SECONDS - start)) s" >&2
}

k8s_ldflags="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"
build etcd "$ETCD_VERSION" etcd go.etcd.io/etcd/server/v3
build kube-apiserver "$KUBERNETES_VERSION" kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
build kube-controller-manager "$KUBERNETES_VERSION" kubernetes k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
build training-operator "$TRAINING_OPERATOR_VERSION" training-operator github.com/kubeflow/training-operator/cmd/training-operator.v1
build trainer-controller-manager "$TRAINER_VERSION" trainer github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager
build jobset "$JOBSET_VERSION" jobset sigs.k8s.io/jobset
build kueue "$KUEUE_VERSION" kueue sigs.k8s.io/kueue/cmd/kueue

# The PyTorchJob CRD ships in the training operator's module; keep a copy beside the binaries.
crd_dir=$(cd "$here/training-operator" && go list -m -f '{{.Dir}}' github.com/kubeflow/training-operator)
cp -f "$crd_dir/manifests/base/crds/kubeflow.org_pytorchjobs.yaml" "$bin/kubeflow.org_pytorchjobs.yaml"
chmod u+w "$bin/kubeflow.org_pytorchjobs.yaml"

# Trainer v2, JobSet and Kueue: their CRDs and webhook manifests, from the same modules.
module_dir() { (cd "$here/$1" && go list -m -f '{{.Dir}}' "$2"); }
copy() {  # copy DEST FILES...: a fresh, writable copy (the module cache is read-only)
  local dest=$1; shift
  rm -rf "${dest:?}"; mkdir -p "$dest"; cp -f "$@" "$dest/"; chmod -R u+w "$dest"
}
jobset_dir=$(module_dir jobset sigs.k8s.io/jobset)
trainer_dir=$(module_dir trainer github.com/kubeflow/trainer/v2)
kueue_dir=$(module_dir kueue sigs.k8s.io/kueue)
copy "$bin/manifests/jobset" "$jobset_dir"/config/components/crd/bases/*.yaml "$jobset_dir/config/components/webhook/manifests.yaml"
copy "$bin/manifests/trainer" "$trainer_dir"/manifests/base/crds/trainer.kubeflow.org_*.yaml
copy "$bin/manifests/kueue" "$kueue_dir"/config/components/crd/bases/*.yaml "$kueue_dir/config/components/webhook/manifests.yaml"
echo "$bin"
