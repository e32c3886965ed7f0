# procgen-rl: `make help` lists the targets. Every variable below can be set on the command line.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PIP_ARGS ?=
BACKEND ?= native
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
STEPS ?= 1000000

export RESULTS_DIR
BIN := $(VENV)/bin
OVERRIDES := $(foreach s,$(SET),--set $(s))
SET_ARGS := $(OVERRIDES) --set stop.time_total_s=$(TIME_LIMIT)
RUN_DIR := $(RESULTS_DIR)/$(basename $(notdir $(EXPERIMENT)))-$(shell date +%Y%m%d-%H%M%S)

.PHONY: help venv train-local rollout tensorboard test bench bench-learning image-cpu image-gpu clean

help: ## list the targets and their variables
	@grep -E '^[a-z -]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'
	@echo "Variables: EXPERIMENT=$(EXPERIMENT) TIME_LIMIT=$(TIME_LIMIT) (s, 0 = none) SET='k=v k=v' STEPS=$(STEPS) (bench-learning)"
	@echo "           RESUME=<run dir> RUN=<run dir> RESULTS_DIR=$(RESULTS_DIR) BACKEND=$(BACKEND) (native | sagemaker)"
	@echo "           INSTANCES=$(INSTANCES) (sagemaker) IMAGE=$(IMAGE) BASE_IMAGE=<image> DOCKER_BUILD_ARGS=<args>"

$(BIN)/procgen-rl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_ARGS) -e '.[test,sagemaker,bench]'
	@touch $@

venv: $(BIN)/procgen-rl ## create the virtualenv with the pinned dependencies

train-local: $(BIN)/procgen-rl ## train EXPERIMENT here, stopping after TIME_LIMIT seconds (RESUME=<run> continues one)
ifeq ($(BACKEND),sagemaker)
	@$(DOCKER) info >/dev/null 2>&1 || { echo "error: no Docker engine answers (docker info): start Docker, or use BACKEND=native" >&2; exit 2; }
	$(MAKE) image-cpu
	$(BIN)/procgen-rl sagemaker-local $(EXPERIMENT) --instances $(INSTANCES) --image $(IMAGE):$(VERSION)-cpu $(SET_ARGS)
else ifneq ($(BACKEND),native)
	@echo "error: unknown BACKEND=$(BACKEND); available: native, sagemaker" >&2; exit 2
else ifeq ($(RESUME),)
	$(BIN)/procgen-rl train $(EXPERIMENT) --run-dir $(RUN_DIR) $(SET_ARGS)
	@echo "With make:   make train-local RESUME=$(RUN_DIR) TIME_LIMIT=0   (continues to the full step budget)"
else
	$(BIN)/procgen-rl train --resume $(RESUME) $(SET_ARGS)
endif

rollout: $(BIN)/procgen-rl ## evaluate RUN (default: newest run): returns, normalized score, video
	@[ -n "$(RUN)" ] || { echo "error: no run in $(RESULTS_DIR)/; train first or set RUN=<run dir>" >&2; exit 2; }
	$(BIN)/procgen-rl rollout $(RUN) --episodes $(EPISODES)

tensorboard: $(BIN)/procgen-rl ## serve RESULTS_DIR (or RUN=<run dir>) on 127.0.0.1, port TB_PORT (6006)
	$(BIN)/tensorboard --logdir $(if $(filter command line,$(origin RUN)),$(RUN),$(RESULTS_DIR)) --host 127.0.0.1 --port $(TB_PORT)

test: $(BIN)/procgen-rl ## run all tests: unit, real Ray/Procgen training, the image (skipped without Docker)
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(BIN)/procgen-rl ## env, sampling, RLlib training and lean-PPO steps/s for EXPERIMENT, their ratio, peak RSS
	$(BIN)/python benchmarks/bench.py $(EXPERIMENT) $(OVERRIDES)

bench-learning: $(BIN)/procgen-rl ## harness and lean PPO for STEPS env steps each, same seed: curves in one PNG
	$(BIN)/python benchmarks/learning.py $(EXPERIMENT) --steps $(STEPS) $(OVERRIDES)

image-cpu image-gpu: image-%: ## build the training image (CPU or CUDA torch) as $(IMAGE):$(VERSION)-<variant>
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/Dockerfile --build-arg VARIANT=$* \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) $(DOCKER_BUILD_ARGS) -t $(IMAGE):$(VERSION)-$* .

clean: ## remove the virtualenv (results/ is kept)
	rm -rf $(VENV)
