# procgen-rl: `make help` lists the targets. Every variable below can be set on the command line,
# or for one machine in a git-ignored local.mk (e.g. DOCKER, BASE_IMAGE, DOCKER_BUILD_ARGS).
-include local.mk
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PIP_ARGS ?=
BACKEND ?= auto
WORKERS ?= 2
INSTANCES ?= 1
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= procgen-rl
DOCKER ?= docker
BASE_IMAGE ?=
DOCKER_BUILD_ARGS ?=
EXPERIMENT ?= experiments/ppo-8m.yaml
TIME_LIMIT ?= 300
SET ?=
RESUME ?=
RESULTS_DIR ?= results
RUN ?= $(shell ls -td $(RESULTS_DIR)/*/ 2>/dev/null | head -1)
EPISODES ?= 16
TB_PORT ?= 6006
PYTEST_ARGS ?=
BENCH_WORKERS ?= 0 1 2

export RESULTS_DIR
BIN := $(VENV)/bin
OVERRIDES := $(foreach s,$(SET),--set $(s))
SET_ARGS := $(OVERRIDES) --set stop.time_total_s=$(TIME_LIMIT)

.PHONY: help venv train-local cluster-up cluster-down cluster-logs rollout tensorboard test bench bench-cluster image-cpu image-gpu clean

help: ## list the targets and their variables
	@grep -hE '^[a-z -]+:.*## ' $(firstword $(MAKEFILE_LIST)) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'
	@echo "Variables: EXPERIMENT=$(EXPERIMENT) TIME_LIMIT=$(TIME_LIMIT) (s, 0 = none) SET='k=v k=v'"
	@echo "           RESUME=<run dir> RUN=<run dir> RESULTS_DIR=$(RESULTS_DIR)"
	@echo "           BACKEND=$(BACKEND) (auto: compose if Docker answers, else native | compose | native | sagemaker)"
	@echo "           WORKERS=$(WORKERS) (compose) INSTANCES=$(INSTANCES) (sagemaker)"
	@echo "           IMAGE=$(IMAGE) DOCKER=$(DOCKER) BASE_IMAGE=<image> DOCKER_BUILD_ARGS=<args>"

$(BIN)/procgen-rl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_ARGS) -e '.[test,sagemaker]'
	@touch $@

venv: $(BIN)/procgen-rl ## create the virtualenv with the pinned dependencies

train-local: $(BIN)/procgen-rl ## train EXPERIMENT for up to TIME_LIMIT s (compose cluster, or native without Docker)
ifeq ($(BACKEND),sagemaker)
	@$(DOCKER) info >/dev/null 2>&1 || { echo "error: no Docker engine answers (docker info): start Docker, or use BACKEND=native" >&2; exit 2; }
	$(MAKE) image-cpu
	$(BIN)/procgen-rl sagemaker-local $(EXPERIMENT) --instances $(INSTANCES) --image $(IMAGE):$(VERSION)-cpu $(SET_ARGS)
else ifeq ($(filter $(BACKEND),auto compose native),)
	@echo "error: unknown BACKEND=$(BACKEND); available: auto, compose, native, sagemaker" >&2; exit 2
else
	@if [ $(BACKEND) != native ] && $(DOCKER) info >/dev/null 2>&1; then $(MAKE) --no-print-directory image-cpu; fi
	$(BIN)/procgen-rl train $(if $(RESUME),--resume $(RESUME),$(EXPERIMENT) --resume-interrupted) $(SET_ARGS) \
		--backend $(BACKEND) --workers $(WORKERS) --image $(IMAGE):$(VERSION)-cpu
endif

cluster-up: $(BIN)/procgen-rl image-cpu ## start a Ray head + WORKERS worker containers that wait for your drivers
	$(BIN)/procgen-rl cluster up --workers $(WORKERS) --image $(IMAGE):$(VERSION)-cpu

cluster-down: $(BIN)/procgen-rl ## stop and remove the compose cluster
	$(BIN)/procgen-rl cluster down

cluster-logs: $(BIN)/procgen-rl ## follow the compose cluster's logs
	$(BIN)/procgen-rl cluster logs

rollout: $(BIN)/procgen-rl ## evaluate RUN (default: newest run): returns, normalized score, video
	@[ -n "$(RUN)" ] || { echo "error: no run in $(RESULTS_DIR)/; train first or set RUN=<run dir>" >&2; exit 2; }
	$(BIN)/procgen-rl rollout $(RUN) --episodes $(EPISODES)

tensorboard: $(BIN)/procgen-rl ## serve RESULTS_DIR (or RUN=<run dir>) on 127.0.0.1, port TB_PORT (6006)
	$(BIN)/tensorboard --logdir $(if $(filter command line,$(origin RUN)),$(RUN),$(RESULTS_DIR)) --host 127.0.0.1 --port $(TB_PORT)

test: $(BIN)/procgen-rl ## run all tests: unit, real Ray/Procgen training, the image (skipped without Docker)
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(BIN)/procgen-rl ## print env, sampling and training steps/s for EXPERIMENT
	$(BIN)/python scripts/bench.py $(EXPERIMENT) $(OVERRIDES)

bench-cluster: $(BIN)/procgen-rl image-cpu ## compose sampling steps/s for WORKERS in BENCH_WORKERS (0 1 2)
	$(BIN)/python scripts/bench_cluster.py $(EXPERIMENT) --workers $(BENCH_WORKERS) --image $(IMAGE):$(VERSION)-cpu

image-cpu image-gpu: image-%: ## build the training image (CPU or CUDA torch) as $(IMAGE):$(VERSION)-<variant>
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/Dockerfile --build-arg VARIANT=$* \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) $(DOCKER_BUILD_ARGS) -t $(IMAGE):$(VERSION)-$* .

clean: ## remove the virtualenv (results/ is kept)
	rm -rf $(VENV)
