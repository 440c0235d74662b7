# Two commands do everything on a fresh machine with Python 3.11: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.PHONY: help setup demo test test-timed lint typecheck bench-serving bench-features bench-engines bench-stream \
	bench-lakehouse bench-plots edge-runner-venv clean \
	kind-up images print-images kind-load torch-gpu-venv deploy port-forward smoke test-e2e kind-down

help:
	@echo "make demo    set up, then train, publish, serve, query and show metrics end to end"
	@echo "make test    set up, then lint, type-check and run every test against real servers"
	@echo "make test-timed      the tests marked timed, RUNS=20 times in a row under LOAD=2 busy processes"
	@echo "make bench-serving   load benchmark (wrk) of the prediction service vs MLServer"
	@echo "make bench-features  feature store benchmark vs Feast (materialization, reads, HTTP)"
	@echo "make bench-engines   onnxruntime vs the compiled forest vs MLServer, pipelines vs scikit-learn"
	@echo "make bench-stream    stream scorer vs a naive consumer, latency at half load, chaos"
	@echo "make bench-lakehouse point-in-time joins: numpy, the DuckDB reference, ours, Spark (10M x 1M)"
	@echo "make bench-plots     redraw the charts of docs/benchmarks.md (docs/img) from the newest results"

setup: $(STAMP)

$(STAMP):
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 required, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	# tritonserver for the tests, from nvidia-pytriton: --no-deps, because its Python side pins numpy<2
	$(BIN)/python -m pip install -q --no-deps nvidia-pytriton==$(PYTRITON_VERSION)
	$(BIN)/python k8s/install_tools.py $(BIN)
	# checkov has its own virtualenv: its pins clash with ours
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install -q checkov==3.3.30
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(BIN)/python -m demo

lint: setup
	$(BIN)/ruff check app jobs tests bench k8s charts devharness examples demo
	$(BIN)/ruff format --check app jobs tests bench k8s charts devharness examples demo

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

# The tests marked `timed` (time, scheduling, scrapes), RUNS times in a row under LOAD busy processes:
# a test of that kind is relied on only after it passed every run.
RUNS ?= 20
LOAD ?= 2
test-timed: setup
	$(BIN)/python -m devharness.repeat --runs $(RUNS) --load $(LOAD) -- -m timed

bench-serving: setup
	$(BIN)/python -m bench.serving

bench-features: setup
	$(BIN)/python -m bench.features

bench-engines: setup
	$(BIN)/python -m bench.engines --duration 5 --runs 3

bench-stream: setup
	$(BIN)/python -m bench.stream

bench-lakehouse: setup
	$(BIN)/python -m bench.lakehouse

bench-plots: setup
	$(BIN)/python -m bench.plots

# The edge runner's virtualenv: onnxruntime, numpy and pillow only (tests/edge runs app/edge/runner.py there)
edge-runner-venv: setup
	$(BIN)/python -m tests.edge.minimal_venv

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

# ---- kind walkthrough (needs docker and kind on the host; see README) ---------------------------
CLUSTER ?= ml-platform
NS ?= ml-platform
RELEASE ?= mlp
REGISTRY ?= localhost/ml-platform
TAG ?= dev
# The images, one list: `make images` builds IMAGES, `make kind-load` loads them into kind, the README
# names them and the tests read them (`make -s print-images`, tests/deploy/images.py). GPU_IMAGES are
# for GPU nodes (EKS), never kind: `make image-triton` builds NGC's Triton (~20 GB).
IMAGES := predict featureserver preprocess stream jobs jobs-multimodal jobs-spark triton-cpu
GPU_IMAGES := triton
# How each is built: its Dockerfile, stage and build args. The Python images install ml-platform with a
# pyproject extra (EXTRAS); the CPU Triton gets the multimodal extra's torch, the export job's.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
TORCH_VERSION := $(shell sed -n 's/^ *"torch==\([^"]*\)",*$$/\1/p' pyproject.toml)
PYTRITON_VERSION := 0.7.0
predict.build := -f images/python/Dockerfile --target predict
featureserver.build := -f images/python/Dockerfile --target featureserver
preprocess.build := -f images/python/Dockerfile --target preprocess --build-arg EXTRAS=preprocess
stream.build := -f images/python/Dockerfile --target stream
jobs.build := -f images/python/Dockerfile --target jobs
jobs-multimodal.build := -f images/python/Dockerfile --target jobs --build-arg EXTRAS=multimodal
jobs-spark.build := -f images/python/Dockerfile --target jobs-spark --build-arg EXTRAS=spark
triton-cpu.build := -f images/triton-cpu/Dockerfile --build-arg PYTRITON_VERSION=$(PYTRITON_VERSION) \
	--build-arg TORCH_VERSION=$(TORCH_VERSION)
triton.build := -f images/triton/Dockerfile
image-build = docker build $($(1).build) --build-arg VERSION=$(VERSION) -t $(REGISTRY)/$(1):$(TAG) .
HELM := $(BIN)/helm
KUBECTL := $(BIN)/kubectl

kind-up: setup
	kind create cluster --config kind-config.yaml
	$(HELM) repo add prometheus-community https://prometheus-community.github.io/helm-charts
	$(HELM) repo add metrics-server https://kubernetes-sigs.github.io/metrics-server/
	$(HELM) repo update
	$(HELM) upgrade --install metrics-server metrics-server/metrics-server -n kube-system -f k8s/metrics-server-values.yaml
	$(HELM) upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack -n monitoring \
	  --create-namespace -f k8s/kube-prometheus-stack-values.yaml --wait
	$(HELM) upgrade --install prometheus-pushgateway prometheus-community/prometheus-pushgateway -n monitoring \
	  --set serviceMonitor.enabled=true --set serviceMonitor.additionalLabels.release=kube-prometheus-stack

images: $(addprefix image-,$(IMAGES))

image-%:
	$(call image-build,$*)

print-images:
	@$(foreach img,$(IMAGES) $(GPU_IMAGES),echo '$(img): $(call image-build,$(img))';)

kind-load:
	for img in $(IMAGES); do kind load docker-image $(REGISTRY)/$$img:$(TAG) --name $(CLUSTER) || exit 1; done

# A throwaway virtualenv with the GPU Triton image's torch (PyPI's CUDA build, ~4 GB with its libraries):
# tests/images/test_torch_versions.py loads the export job's TorchScript in it, and skips without it.
GPU_TORCH_VERSION = $(shell sed -n 's/^ARG LIBTORCH_VERSION=//p' images/triton/Dockerfile)
torch-gpu-venv:
	$(PYTHON) -m venv var/torch-gpu-venv
	var/torch-gpu-venv/bin/python -m pip install -q --only-binary=:all: torch==$(GPU_TORCH_VERSION)

deploy: setup
	$(KUBECTL) apply -f k8s/namespace.yaml
	$(KUBECTL) -n $(NS) get secret s3-credentials >/dev/null 2>&1 || $(KUBECTL) -n $(NS) create secret generic \
	  s3-credentials --from-literal=AWS_ACCESS_KEY_ID=dev-$$(openssl rand -hex 6) \
	  --from-literal=AWS_SECRET_ACCESS_KEY=$$(openssl rand -hex 24)
	$(KUBECTL) apply -f k8s/s3.yaml
	# ready once SeaweedFS answers and the models/features buckets exist (its "buckets" container)
	$(KUBECTL) -n $(NS) rollout status deploy/s3 --timeout=300s
	# No hooks: the bootstrap and export Jobs run alongside the services, whose readiness follows
	# what the Jobs publish; --wait-for-jobs waits for both.
	$(HELM) upgrade --install $(RELEASE) charts/ml-platform -n $(NS) -f charts/ml-platform/ci/kind-values.yaml \
	  --set global.image.registry=$(REGISTRY) --set global.image.tag=$(TAG) --wait --wait-for-jobs --timeout 20m

port-forward:
	$(KUBECTL) -n $(NS) port-forward svc/$(RELEASE)-predict 8080:8080 & \
	$(KUBECTL) -n $(NS) port-forward svc/$(RELEASE)-featurestore-featureserver 8081:8080 & \
	$(KUBECTL) -n $(NS) port-forward svc/$(RELEASE)-multimodal-preprocess 8082:8080 & \
	$(KUBECTL) -n monitoring port-forward svc/kube-prometheus-stack-grafana 3000:80 & \
	wait

smoke: setup
	$(HELM) test $(RELEASE) -n $(NS)

# The end-to-end test against whatever cluster KUBECONFIG reaches (skipped, with the reason, when none).
test-e2e: setup
	$(BIN)/python -m pytest tests/e2e -v

kind-down:
	kind delete cluster --name $(CLUSTER)
