# defectcam — every target builds the virtual environment first if it is missing.
#   make reproduce                      all stages of the default (quick) experiment
#   make train EXPERIMENT=paper         pick an experiment
#   make localize ARGS="localize.n_thresholds=201"   pass Hydra overrides
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXPERIMENT ?= quick
ARGS ?=
RUN = experiment=$(EXPERIMENT) $(ARGS)
SWEEP_THRESHOLDS ?= 0.05,0.1,0.15,0.2,0.3,0.4,0.5,0.6
SEEDS ?= 0,1,2
# --no-cache-dir: the wheels are installed once; a cached copy would only take disk (CI machines can be short of it).
PIP := $(BIN)/python -m pip --disable-pip-version-check --no-cache-dir -q
# This machine's pip configuration names local indexes that may not exist; their warnings are noise.
QUIET_PIP := { grep -v "^WARNING: Location" || true; }

.PHONY: setup data train evaluate cams fullres localize report reproduce predict export sweep seeds bench test clean

setup: $(VENV)/.installed

# torch and torchvision come from the local disk with plain pip (never uv/poetry: they would download ~3 GB).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e ".[test]" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import defectcam, torch, torchvision, pytorch_lightning, hydra"
	touch $@

data: setup
	$(BIN)/defectcam-data $(RUN)

train: setup
	$(BIN)/defectcam-train $(RUN)

evaluate: setup
	$(BIN)/defectcam-evaluate $(RUN)

cams: setup
	$(BIN)/defectcam-cams $(RUN)

fullres: setup
	$(BIN)/defectcam-fullres $(RUN)

localize: setup
	$(BIN)/defectcam-localize $(RUN)

report: setup
	$(BIN)/defectcam-report $(RUN)

reproduce: setup
	$(BIN)/defectcam-reproduce $(RUN)

# A trained experiment's localizer on new images: make predict ARGS="predict.input=new/ predict.output=predicted/ data.problems=[1]"
# An exported file on its own, no experiment folder: make predict ARGS="predict.model=localizer.onnx predict.input=new/ predict.output=predicted/"
predict: setup
	$(BIN)/defectcam-predict $(RUN)

# The classifier with the decoder and/or CAMs of predict's entry as one model, problem_<k>/export/localizer.onnx, .pt2
# and .json (docs/export.md): make export ARGS="data.problems=[1] predict.entry=fullres/layercam/layer2"
export: setup
	$(BIN)/defectcam-export $(RUN)

# A threshold sweep over the cached CAMs (run `make reproduce` or `make cams` first), jobs in parallel
# with the joblib launcher; gathered into outputs/<experiment>/sweep/sweep.csv and sweep.png.
sweep: setup
	$(BIN)/defectcam-localize -m $(RUN) localize.threshold=$(SWEEP_THRESHOLDS) hydra/launcher=joblib hydra.launcher.n_jobs=2

# Every stage once per training seed, each in outputs/<experiment>_seeds/seed_<k>/ (the split stays fixed by
# data.split_seed); a Hydra callback writes mean and std over seeds to outputs/<experiment>_seeds/seeds/.
seeds: setup
	$(BIN)/defectcam-reproduce -m $(RUN) seed=$(SEEDS) 'paths.output_dir=$${paths.root_dir}/outputs/$${experiment_name}_seeds/seed_$${seed}'

bench: setup
	$(BIN)/python benchmarks/bench_cams.py
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_checkpoint.py
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_fullres.py

# Two workers, one per core (one OpenMP thread each: tests/conftest.py).
test: setup
	$(BIN)/python -m pytest -q -n 2

clean:
	rm -rf outputs multirun data/synthetic data/.synthetic.lock .pytest_cache build dist
