#!/usr/bin/env bash
# Builds a real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler), etcd and kwok from the official Go modules, so the cluster test tier
# needs neither Docker nor downloaded release binaries. Each binary is built only when
# missing from the cache directory, so later runs cost nothing.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-0.8.0}"
STAGING_VERSION="v0.${KUBE_VERSION#1.}"
OUT="${STARKMATTER_KUBE_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/starkmatter/kube-v${KUBE_VERSION}}"
SRC="$OUT/src"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -mod=mod"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

mkdir -p "$OUT" "$SRC"
log() { echo "hack/kube/build.sh: $*" >&2; }

build_kubernetes() {
  local dir="$SRC/kubernetes"
  mkdir -p "$dir"
  cd "$dir"
  # The release's go.mod replaces every k8s.io/* staging module by a local path that
  # does not exist outside the kubernetes repository; point each at its published tag.
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@v${KUBE_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "module starkmatter.local/kubebuild"
    echo
    echo "go 1.25"
    echo
    echo "require k8s.io/kubernetes v${KUBE_VERSION}"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\1#p' "$gomod" | sort -u |
      while read -r mod; do echo "	$mod => $mod $STAGING_VERSION"; done
    echo ")"
  } > go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
GO
  go mod tidy -e
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v${KUBE_VERSION}"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=${KUBE_VERSION%%.*}"
  local minor="${KUBE_VERSION#*.}"
  ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=v${KUBE_VERSION}"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    if [[ ! -x "$OUT/$cmd" ]]; then
      log "building $cmd v${KUBE_VERSION}"
      go build -tags tools -ldflags "$ldflags" -o "$OUT/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$OUT/$cmd.tmp" "$OUT/$cmd"
    fi
  done
}

build_etcd() {
  local dir="$SRC/etcd"
  mkdir -p "$dir"
  cd "$dir"
  cat > go.mod <<GOMOD
module starkmatter.local/etcdbuild

go 1.25

require go.etcd.io/etcd/server/v3 v${ETCD_VERSION}
GOMOD
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go mod tidy -e
  log "building etcd v${ETCD_VERSION}"
  go build -ldflags "-s -w" -o "$OUT/etcd.tmp" .
  mv "$OUT/etcd.tmp" "$OUT/etcd"
}

build_kwok() {
  local dir="$SRC/kwok"
  mkdir -p "$dir"
  cd "$dir"
  cat > go.mod <<GOMOD
module starkmatter.local/kwokbuild

go 1.25

require sigs.k8s.io/kwok v${KWOK_VERSION}
GOMOD
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
GO
  go mod tidy -e
  log "building kwok v${KWOK_VERSION}"
  go build -tags tools -ldflags "-s -w" -o "$OUT/kwok.tmp" sigs.k8s.io/kwok/cmd/kwok
  mv "$OUT/kwok.tmp" "$OUT/kwok"
  # The stage files that make fake nodes Ready and fake pods Running ship in the module.
  local moddir
  moddir="$(go list -m -f '{{.Dir}}' "sigs.k8s.io/kwok")"
  mkdir -p "$OUT/kwok-stages"
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cp "$moddir/kustomize/stage/$f" "$OUT/kwok-stages/$(basename "$f")"
  done
  chmod u+w "$OUT"/kwok-stages/*.yaml
}

[[ -x "$OUT/etcd" ]] || (build_etcd)
[[ -x "$OUT/kwok" && -f "$OUT/kwok-stages/pod-ready.yaml" ]] || (build_kwok)
[[ -x "$OUT/kube-apiserver" && -x "$OUT/kube-controller-manager" && -x "$OUT/kube-scheduler" ]] \
  || (build_kubernetes)
log "binaries ready in $OUT"
