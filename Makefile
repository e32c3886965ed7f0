# procgen-rl: `make help` lists the targets. Every variable below can be set on the command line,
# or for one machine in a git-ignored local.mk (e.g. DOCKER, BASE_IMAGE, DOCKER_BUILD_ARGS).
-include local.mk
.DEFAULT_GOAL := help  # also when local.mk adds rules of its own
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
# train-cloud (a SageMaker job; AWS region/credentials from env or profile, SAGEMAKER_ROLE, SAGEMAKER_BUCKET)
INSTANCE_TYPE ?=
INSTANCE_COUNT ?= 1
GPU_INSTANCES ?= 0
CPU_INSTANCES ?= 0
GPU_INSTANCE_TYPE ?=
CPU_INSTANCE_TYPE ?=
SPOT ?= 1
MAX_RUN ?=
WAIT ?=
DRY_RUN ?=
CLOUD_ARGS ?=
STEPS ?= 1000000
# benchmark and report
SUITE ?= benchmarks/suites/smoke.yaml
SUITE_DIR ?=
MAX_CONCURRENT ?=

export RESULTS_DIR
BIN := $(VENV)/bin
OVERRIDES := $(foreach s,$(SET),--set $(s))
SET_ARGS := $(OVERRIDES) --set stop.time_total_s=$(TIME_LIMIT)
yes = $(filter-out 0 no false,$(1))
CLOUD_FLAGS = --instance-count $(INSTANCE_COUNT) --gpu-instances $(GPU_INSTANCES) --cpu-instances $(CPU_INSTANCES) \
	$(if $(INSTANCE_TYPE),--instance-type $(INSTANCE_TYPE)) $(if $(GPU_INSTANCE_TYPE),--gpu-instance-type $(GPU_INSTANCE_TYPE)) \
	$(if $(CPU_INSTANCE_TYPE),--cpu-instance-type $(CPU_INSTANCE_TYPE)) $(if $(call yes,$(SPOT)),,--no-spot) \
	$(if $(MAX_RUN),--max-run $(MAX_RUN)) $(if $(call yes,$(WAIT)),--wait) $(if $(call yes,$(DRY_RUN)),--dry-run) $(CLOUD_ARGS)
# RUN=s3://bucket/prefix/job: a cloud run, fetched into RESULTS_DIR/job first
S3_RUN = $(filter s3://%,$(RUN))
S3_RUN_DIR = $(RESULTS_DIR)/$(notdir $(patsubst %/,%,$(RUN)))
NEWEST_SUITE_DIR = $(patsubst %/suite.yaml,%,$(firstword $(shell ls -td $(RESULTS_DIR)/*/suite.yaml 2>/dev/null)))

.PHONY: help venv train-local train-cloud cluster-up cluster-down cluster-logs rollout tensorboard benchmark report test lint typecheck docs bench bench-learning bench-cluster image-cpu image-gpu clean

help: ## list the targets and their variables
	@grep -hE '^[a-z -]+:.*## ' $(firstword $(MAKEFILE_LIST)) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'
	@echo "Variables: EXPERIMENT=$(EXPERIMENT) TIME_LIMIT=$(TIME_LIMIT) (s, 0 = none) SET='k=v k=v' STEPS=$(STEPS) (bench-learning)"
	@echo "           RESUME=<run dir> RUN=<run dir> RESULTS_DIR=$(RESULTS_DIR)"
	@echo "           BACKEND=$(BACKEND) (auto: compose if Docker answers, else native | compose | native | sagemaker: local mode)"
	@echo "           WORKERS=$(WORKERS) (compose) INSTANCES=$(INSTANCES) (sagemaker)"
	@echo "           IMAGE=$(IMAGE) DOCKER=$(DOCKER) BASE_IMAGE=<image> DOCKER_BUILD_ARGS=<args>"
	@echo "train-cloud: INSTANCE_TYPE=ml.g4dn.xlarge INSTANCE_COUNT=$(INSTANCE_COUNT) | GPU_INSTANCES=1 CPU_INSTANCES=3"
	@echo "           GPU_INSTANCE_TYPE=ml.g4dn.xlarge CPU_INSTANCE_TYPE=ml.c5.4xlarge SPOT=$(SPOT) MAX_RUN=<s> WAIT=1 DRY_RUN=1"
	@echo "           CLOUD_ARGS='--bucket B --role R ...'; RUN=s3://bucket/prefix/job for rollout and tensorboard"
	@echo "benchmark: SUITE=$(SUITE) SUITE_DIR=<suite dir> (continue one; report: default the newest) MAX_CONCURRENT=<n>"

$(BIN)/procgen-rl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_ARGS) -e '.[test,sagemaker,bench]'
	@touch $@

venv: $(BIN)/procgen-rl ## create the virtualenv with the pinned dependencies

train-local: $(BIN)/procgen-rl ## train EXPERIMENT for up to TIME_LIMIT s on BACKEND (auto: compose, or native without Docker)
	@if [ $(BACKEND) != native ] && $(DOCKER) info >/dev/null 2>&1; then $(MAKE) --no-print-directory image-cpu; fi
	$(BIN)/procgen-rl train $(if $(RESUME),--resume $(RESUME),$(EXPERIMENT) $(if $(filter sagemaker,$(BACKEND)),,--resume-interrupted)) \
		$(SET_ARGS) --backend $(BACKEND) --workers $(WORKERS) --instances $(INSTANCES) --image $(IMAGE):$(VERSION)-cpu

cluster-up: $(BIN)/procgen-rl image-cpu ## start a Ray head + WORKERS worker containers that wait for your drivers
	$(BIN)/procgen-rl cluster up --workers $(WORKERS) --image $(IMAGE):$(VERSION)-cpu

cluster-down: $(BIN)/procgen-rl ## stop and remove the compose cluster
	$(BIN)/procgen-rl cluster down

cluster-logs: $(BIN)/procgen-rl ## follow the compose cluster's logs
	$(BIN)/procgen-rl cluster logs

train-cloud: $(BIN)/procgen-rl ## start EXPERIMENT as a SageMaker training job (build the image first: make image-gpu)
	$(BIN)/procgen-rl cloud train $(EXPERIMENT) $(strip $(CLOUD_FLAGS)) $(OVERRIDES)

rollout: $(BIN)/procgen-rl ## evaluate RUN (default: newest run; s3://... a cloud run's model): returns, score, video
	@[ -n "$(RUN)" ] || { echo "error: no run in $(RESULTS_DIR)/; train first or set RUN=<run dir>" >&2; exit 2; }
ifneq ($(S3_RUN),)
	$(BIN)/procgen-rl cloud fetch $(RUN) $(S3_RUN_DIR) --model
	$(BIN)/procgen-rl rollout $(S3_RUN_DIR)/model --episodes $(EPISODES)
else
	$(BIN)/procgen-rl rollout $(RUN) --episodes $(EPISODES)
endif

tensorboard: $(BIN)/procgen-rl ## serve RESULTS_DIR (or RUN=<run dir> or s3://..., synced first) on 127.0.0.1:TB_PORT
ifneq ($(S3_RUN),)
	$(BIN)/procgen-rl cloud fetch $(RUN) $(S3_RUN_DIR)
	$(BIN)/tensorboard --logdir $(S3_RUN_DIR)/run --host 127.0.0.1 --port $(TB_PORT)
else
	$(BIN)/tensorboard --logdir $(if $(filter command line,$(origin RUN)),$(RUN),$(RESULTS_DIR)) --host 127.0.0.1 --port $(TB_PORT)
endif

benchmark: $(BIN)/procgen-rl ## train every cell of SUITE on Ray Tune (SUITE_DIR=<dir> continues a suite; MAX_CONCURRENT)
	$(BIN)/procgen-rl benchmark $(strip $(SUITE) $(if $(SUITE_DIR),--dir $(SUITE_DIR)) $(if $(MAX_CONCURRENT),--max-concurrent $(MAX_CONCURRENT)))

report: $(BIN)/procgen-rl ## report.md, curves-<game>.png, scores.json of SUITE_DIR (default: the newest suite) vs the paper
	@[ -n "$(or $(SUITE_DIR),$(NEWEST_SUITE_DIR))" ] || { echo "error: no suite directory in $(RESULTS_DIR)/; run make benchmark or set SUITE_DIR=<dir>" >&2; exit 2; }
	$(BIN)/procgen-rl report $(or $(SUITE_DIR),$(NEWEST_SUITE_DIR))

test: $(BIN)/procgen-rl ## run all tests: unit, real Ray/Procgen training, the image (skipped without Docker)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(BIN)/procgen-rl ## ruff check and ruff format --check (settings in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/procgen-rl ## mypy on src/ (settings in pyproject.toml)
	$(BIN)/mypy

docs: $(BIN)/procgen-rl ## regenerate docs/configuration.md and the figure tables of docs/ from benchmarks/records/
	$(BIN)/python -m procgen_rl.config_reference
	$(BIN)/python scripts/render_docs.py

bench: $(BIN)/procgen-rl ## env, sampling, RLlib training and lean-PPO steps/s for EXPERIMENT, their ratio, peak RSS
	$(BIN)/python benchmarks/bench.py $(EXPERIMENT) $(OVERRIDES)

bench-learning: $(BIN)/procgen-rl ## harness and lean PPO for STEPS env steps each, same seed: curves in one PNG
	$(BIN)/python benchmarks/learning.py $(EXPERIMENT) --steps $(STEPS) $(OVERRIDES)

bench-cluster: $(BIN)/procgen-rl image-cpu ## compose sampling steps/s for WORKERS in BENCH_WORKERS (0 1 2)
	$(BIN)/python benchmarks/bench_cluster.py $(EXPERIMENT) --workers $(BENCH_WORKERS) --image $(IMAGE):$(VERSION)-cpu

image-cpu image-gpu: image-%: ## build the training image (CPU or CUDA torch) as $(IMAGE):$(VERSION)-<variant>
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/Dockerfile --build-arg VARIANT=$* \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) $(DOCKER_BUILD_ARGS) -t $(IMAGE):$(VERSION)-$* .

clean: ## remove the virtualenv (results/ is kept)
	rm -rf $(VENV)
