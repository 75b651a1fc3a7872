# Two commands do all the set-up on a fresh machine:  `make demo`  and  `make test`.
# Both create/update the virtualenv first; it is reinstalled only when pyproject.toml changes, so a re-run
# goes straight to the work.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mtedge-installed
PIP    := $(BIN)/pip install -q --disable-pip-version-check

# The base (runtime) install, checked in a venv of its own: an app that only translates must get a working
# mtedge without torch or transformers (DESIGN §2).
RUNTIME_VENV  ?= .venv-runtime
RUNTIME_STAMP := $(RUNTIME_VENV)/.mtedge-installed
# Everything that ends up in the wheel: a changed module means the non-editable install is stale.
PACKAGE_FILES := $(shell find mtedge -type f -not -path '*/__pycache__/*' -not -name '*.pyc')
# A bundle to translate with in the runtime venv (tests/runtime_smoke.py); empty: that step is skipped.
RUNTIME_SMOKE_BUNDLE ?=

# The embedded default model (published by benchmarks/reference_model/card.py) and what the demo makes of it.
REFERENCE_MODEL ?= benchmarks/reference_model/model
DEMO_BUNDLE     ?= export/reference-en-de
DEMO_DEV        ?= benchmarks/corpora/data/bible/dev.tsv
DEMO_TEST       ?= benchmarks/corpora/data/bible/test.tsv
# git-ignored: a demo run is not a recorded result (those go to benchmarks/results/<suite>/ on purpose)
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
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build (DESIGN §3)
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

# The main job on the embedded reference model: export it to a bundle (ONNX + CTranslate2, fp32 + int8,
# validated on the bible dev set), then benchmark every engine side by side on the bible test set.
# The bundle is rebuilt only when the model changes.
demo: $(STAMP) $(DEMO_BUNDLE)/manifest.json $(DEMO_TEST)
	$(BIN)/mtedge info $(DEMO_BUNDLE)
	$(BIN)/mtedge bench $(DEMO_BUNDLE) --test $(DEMO_TEST) --quick --out $(DEMO_OUT)

$(REFERENCE_MODEL)/model.safetensors:
	@echo "make demo: no reference model at $(REFERENCE_MODEL); it is published by" \
	      "'python -m benchmarks.reference_model.card' after benchmarks/reference_model/train.sh" >&2
	@exit 1

$(DEMO_BUNDLE)/manifest.json: $(REFERENCE_MODEL)/model.safetensors $(DEMO_DEV) | $(STAMP)
	$(BIN)/mtedge export $(REFERENCE_MODEL) -o $(DEMO_BUNDLE) --validation-file $(DEMO_DEV) --force

$(DEMO_DEV) $(DEMO_TEST): | $(STAMP)
	$(BIN)/python -m benchmarks.corpora build bible

corpora: $(STAMP)
	$(BIN)/python -m benchmarks.corpora build all

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) .pytest_cache .cache/fixtures build mtedge.egg-info
