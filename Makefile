# Two commands do all the set-up on a fresh machine:  `make demo`  and  `make test`.
# Both create/update the virtualenv first; it is reinstalled only when pyproject.toml changes, so a re-run
# goes straight to the work.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mtedge-installed
PIP    := $(BIN)/pip install -q --disable-pip-version-check

# The base (runtime) install, checked in a venv of its own: an app that only translates must get a working
# mtedge without torch or transformers (mtedge/DESIGN.md §2).
RUNTIME_VENV  ?= .venv-runtime
RUNTIME_STAMP := $(RUNTIME_VENV)/.mtedge-installed
# Everything that ends up in the wheel: a changed module means the non-editable install is stale.
PACKAGE_FILES := $(shell find mtedge -type f -not -path '*/__pycache__/*' -not -name '*.pyc')
# A bundle to translate with in the runtime venv (tests/runtime_smoke.py); empty: that step is skipped.
RUNTIME_SMOKE_BUNDLE ?=

# The embedded default model (published by benchmarks/reference_model/card.py) and what the demo makes of it.
REFERENCE_MODEL ?= benchmarks/reference_model/model
CORPORA_DATA    := benchmarks/corpora/data
WEBUI           := $(CORPORA_DATA)/webui
# git-ignored: a demo run is not a recorded result (those go to benchmarks/results/<suite>/ on purpose)
DEMO_LORA       ?= build/demo/lora
DEMO_BUNDLE     ?= export/demo-lora-webui
DEMO_OUT        ?= benchmarks/results/tmp/demo

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Trained test fixtures are reused across runs (keyed by tests/factories.py's source); a fresh clone, and
# so CI, trains them. Override with your own path, e.g. one shared by several checkouts.
export MTEDGE_FIXTURE_CACHE ?= $(CURDIR)/.cache/fixtures

.PHONY: demo test install check-runtime-install corpora clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build (mtedge/DESIGN.md §3)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[all]'
	touch $(STAMP)

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: $(STAMP) check-runtime-install
	$(BIN)/python -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

# A changed pyproject.toml rebuilds the venv from nothing (a dependency dropped from the base install must
# disappear here too, or a stale torch would hide it); a changed module only reinstalls mtedge itself.
$(RUNTIME_VENV)/.deps-installed: pyproject.toml
	rm -rf $(RUNTIME_VENV)
	$(PYTHON) -m venv $(RUNTIME_VENV)
	touch $@

$(RUNTIME_STAMP): $(RUNTIME_VENV)/.deps-installed $(PACKAGE_FILES)
	# setuptools builds in ./build and never prunes it: a module deleted from mtedge/ would ride along
	rm -rf build
	# pip always reinstalls a local project, and leaves dependencies that are already satisfied alone
	$(RUNTIME_VENV)/bin/pip install -q --disable-pip-version-check .
	touch $@

# -P: do not put the working directory on sys.path, so `import mtedge` is the installed copy, not ./mtedge.
check-runtime-install: $(RUNTIME_STAMP)
	@$(RUNTIME_VENV)/bin/python -P -c 'import importlib.util as u, mtedge, sys; \
	heavy = [m for m in ("torch", "transformers") if u.find_spec(m)]; \
	sys.exit(f"base install pulled in {heavy}") if heavy else None; \
	sys.exit(f"imported mtedge from {mtedge.__file__}, not the venv") if "$(RUNTIME_VENV)" not in mtedge.__file__ else None; \
	print(f"runtime install: import mtedge {mtedge.__version__} ok; torch and transformers not installed")'
	@$(RUNTIME_VENV)/bin/mtedge --help > /dev/null
	@echo "runtime install: mtedge --help ok ($$(du -sh $(RUNTIME_VENV) | cut -f1) venv)"
	@$(RUNTIME_VENV)/bin/python -P tests/runtime_smoke.py $(RUNTIME_SMOKE_BUNDLE)

# The main job on the embedded reference model, end to end (2 min 16 s and 2 min 54 s measured on 2 idle
# cores, venv and corpora already built, 2026-12-03):
#  1. fine-tune it with LoRA on web-UI text (webui corpus, 120 steps), merge, and score before/after;
#  2. export the merged model to a bundle (ONNX fp32 + int8 + int8_latency, CTranslate2 float32 + int8),
#     validated against PyTorch;
#     then translate five test sentences with it, each beside its reference (benchmarks/reference_model/samples.py);
#  3. benchmark every engine and precision side by side on the webui test set (--quick), with plots.
demo: $(STAMP) $(REFERENCE_MODEL)/model.safetensors $(CORPORA_DATA)/.built
	$(BIN)/python -m benchmarks.lora_webui.run --quick
	$(BIN)/mtedge export $(DEMO_LORA)/merged -o $(DEMO_BUNDLE) --validation-file $(WEBUI)/dev.tsv \
	    --validate-n 100 --onnx-precisions fp32,int8,int8_latency --force
	$(BIN)/mtedge info $(DEMO_BUNDLE)
	$(BIN)/python -m benchmarks.reference_model.samples $(DEMO_BUNDLE)
	$(BIN)/mtedge bench $(DEMO_BUNDLE) --test $(WEBUI)/test.tsv --quick --out $(DEMO_OUT)

$(REFERENCE_MODEL)/model.safetensors:
	@echo "make demo: no reference model at $(REFERENCE_MODEL); it is published by" \
	      "'python -m benchmarks.reference_model.card' after benchmarks/reference_model/train.sh" >&2
	@exit 1

# bible + sysmsg (how much general quality the LoRA model keeps) and webui (its domain)
$(CORPORA_DATA)/.built: | $(STAMP)
	$(BIN)/python -m benchmarks.corpora build all
	touch $@

corpora: $(STAMP)
	$(BIN)/python -m benchmarks.corpora build all

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) .pytest_cache .cache/fixtures build mtedge.egg-info
