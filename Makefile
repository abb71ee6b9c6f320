# One command installs and runs each job on a fresh machine: the targets depend on `setup`.
PYTHON_SYS ?= python3.11
VENV       ?= .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup data train sweep eval test test-all bench clean reconstruct app

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

data: setup
	$(PY) generate.py

train: setup
	$(PY) train.py

# Table 1's 5 x 5: scratch (whole backbone trained, 1-1.5 min an epoch on 2 cores) at 4 epochs, the rest at 12
sweep: setup
	$(PY) train.py -m seed=0,1,2,3,4 experiment=pretrained,transfer,ssl_20pct,ssl_100pct trainer.max_epochs=12
	$(PY) train.py -m seed=0,1,2,3,4 experiment=scratch trainer.max_epochs=4

# make reconstruct [IMAGE=photo.png|folder] [CKPT=logs/<task>/runs/<time>/checkpoints/last.ckpt] (default: the newest run)
IMAGE ?= examples/astronaut.png
CKPT  ?= $(shell ls -t logs/*/runs/*/checkpoints/last.ckpt logs/multiruns/*/*/checkpoints/last.ckpt 2>/dev/null | head -1)
NEED_CKPT = @test -n "$(CKPT)" || { echo "no checkpoint: run 'make train' or pass CKPT=<run>/checkpoints/last.ckpt"; exit 1; }
reconstruct: setup
	$(NEED_CKPT)
	$(PY) reconstruct.py image=$(IMAGE) ckpt=$(CKPT)

# make app [CKPT=...] [PORT=7860]: the local web app (http://127.0.0.1:$(PORT)) on a trained run (default: the newest)
PORT ?= 7860
app: setup
	$(NEED_CKPT)
	$(PY) app.py ckpt=$(CKPT) port=$(PORT)

eval: setup
	$(PY) evaluate.py

test: setup
	$(PY) -m pytest -m "not slow" -q

test-all: setup
	$(PY) -m pytest -q

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf logs .pytest_cache
