# The README's two commands: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ASR := $(VENV)/bin/asr
TORCH_VERSION := 2.13.0
APT_PACKAGES := espeak-ng flite sox fortunes wordnet-base
DATA := data/synthetic
EXP := exp/demo
DEMO_EPOCHS ?= 14
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-deps demo lint test test-fast bench clean

setup: system-deps $(VENV)/.installed

# Debian packages for speech synthesis and the open-vocabulary corpus's text (only installed when missing).
system-deps:
	@missing=""; for c in espeak-ng flite sox; do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	[ -f /usr/share/games/fortunes/literature ] || missing="$$missing fortunes"; \
	[ -f /usr/share/wordnet/data.noun ] || missing="$$missing wordnet-base"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing from Debian"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

# torch is pinned first (the local CPU wheel), so that no dependency range pulls a CUDA build.
# Every other package is pinned by constraints.txt to the versions CI tested (Lightning's
# checkpointing, for one, changed within 2.x). The editable install compiles csrc/ into asr/_C
# against that torch (no build isolation), and is redone whenever csrc/ or the build files change.
$(VENV)/.installed: pyproject.toml setup.py constraints.txt $(shell find csrc -type f 2>/dev/null)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q --no-build-isolation -c constraints.txt -e ".[dev]" "torch==$(TORCH_VERSION)"
	touch $@

# Main job: synthesize a corpus, train a streaming Conformer-CTC (dynamic chunk training: one
# model for offline and streaming), decode the test split offline and as 320 ms streams, score WER.
demo: setup
	$(ASR) prepare synthetic --corpus-dir $(DATA)/LibriSpeech --out $(DATA)/manifests --size demo
	rm -rf $(EXP)
	$(ASR) train model=conformer_ctc_streaming exp_dir=$(EXP) trainer.max_epochs=$(DEMO_EPOCHS)
	$(ASR) transcribe --ckpt $(EXP)/best.ckpt --data $(DATA)/LibriSpeech/test-clean --out $(EXP)/hyp_greedy.txt
	$(ASR) transcribe --ckpt $(EXP)/best.ckpt --data $(DATA)/LibriSpeech/test-clean --out $(EXP)/hyp_beam.txt --method beam --beam 4 --quiet
	$(ASR) stream --ckpt $(EXP)/best.ckpt --data $(DATA)/LibriSpeech/test-clean --out $(EXP)/hyp_stream_320ms.txt --chunk-ms 320 --quiet
	$(ASR) transcribe --ckpt $(EXP)/best.ckpt --data $(DATA)/LibriSpeech/test-clean --format ctm --out $(EXP)/words.ctm --quiet
	$(ASR) score $(DATA)/manifests/test-clean.ref.txt $(EXP)/hyp_stream_320ms.txt --report $(EXP)/errors_stream_320ms.txt
	$(ASR) score $(DATA)/manifests/test-clean.ref.txt $(EXP)/hyp_beam.txt --report $(EXP)/errors_beam.txt
	$(ASR) score $(DATA)/manifests/test-clean.ref.txt $(EXP)/hyp_greedy.txt --report $(EXP)/errors_greedy.txt --plot $(EXP)/wer_by_length.png

# ruff (config in pyproject.toml): lint rules and the formatter's check, on the whole tree.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q -ra tests

# Development tier: everything but the tests that train models for minutes (`slow`).
test-fast: setup
	$(PY) -m pytest -q -ra -m "not slow" tests

bench: setup
	$(PY) scripts/bench/bench_features.py
	$(PY) scripts/bench/bench_train_step.py
	$(PY) scripts/bench/bench_rnnt.py

clean:
	rm -rf $(VENV) build *.egg-info
