# The two set-up commands of the README: `make demo` (the main job, on the CPU) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := .make/installed

.PHONY: install demo test test-full lint bench clean

$(STAMP): pyproject.toml
	@# torch==2.13.0 is the CPU wheel served locally; never replace a torch that is already there
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[dev]"
	@mkdir -p .make && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m segdeploy list
	$(PYTHON) -m segdeploy predict --model segnext_t --image tests/data/images/grace_hopper.jpg \
		--output artifacts/grace_hopper_segnext_t.png --force

test: $(STAMP)
	$(PYTHON) -m ruff check segdeploy tests benchmarks
	$(PYTHON) -m pytest -q -m "not slow"

test-full: $(STAMP)
	$(PYTHON) -m pytest -q

lint: $(STAMP)
	$(PYTHON) -m ruff check segdeploy tests benchmarks

clean:
	rm -rf .make artifacts build *.egg-info .pytest_cache
