# The two set-up commands of the README: `make demo` (the main job, on the CPU) and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := .make/installed

.PHONY: install demo test test-full lint bench fixtures clean

$(STAMP): pyproject.toml
	@# torch==2.13.0 is the CPU wheel served locally; never replace a torch that is already there
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[dev]"
	@mkdir -p .make && touch $(STAMP)

install: $(STAMP)

# the design card's headline model: export it to ONNX, check the artifact against PyTorch, time it on PyTorch and
# ONNX Runtime next to the paper's figure, then segment a photo with the fastest CPU backend
DEMO_MODEL ?= cgrseg_t

demo: $(STAMP)
	$(PYTHON) -m segdeploy list
	$(PYTHON) -m segdeploy export --model $(DEMO_MODEL) --fmt onnx --height 512 --width 512 --force
	$(PYTHON) -m segdeploy validate artifacts/$(DEMO_MODEL)_512x512.onnx --n 4 --images tests/data/images \
		--json artifacts/$(DEMO_MODEL)_512x512.validate.json
	$(PYTHON) -m segdeploy bench --model $(DEMO_MODEL) --backend torch,onnxruntime --batch 1 --min-s 2 \
		--md artifacts/$(DEMO_MODEL)_bench.md --json artifacts/$(DEMO_MODEL)_bench.json
	$(PYTHON) -m segdeploy predict --model $(DEMO_MODEL) --image tests/data/images/grace_hopper.jpg \
		--output artifacts/grace_hopper_$(DEMO_MODEL).png --force

test: $(STAMP)
	$(PYTHON) -m ruff check segdeploy tests benchmarks
	$(PYTHON) -m pytest -q -m "not slow"

test-full: $(STAMP)
	$(PYTHON) -m pytest -q

# SegNeXt-T on PyTorch (both layouts) and ONNX Runtime, about a minute on a quiet machine; the CPU matrix is
# `python benchmarks/run_cpu_matrix.py` (see benchmarks/README.md).
bench: $(STAMP)
	$(PYTHON) -m segdeploy bench --model segnext_t --backend torch,onnxruntime --layout nchw,channels_last \
		--md artifacts/bench/segnext_t.md --json artifacts/bench/segnext_t.json

# The accuracy fixtures: each T variant (and a low-margin cgrseg_t) trained on the synthetic dataset on the CPU,
# cached under ~/.cache/segdeploy/fixtures (or $$SEGDEPLOY_CACHE/fixtures); cached ones are reused, FORCE=1 retrains.
fixtures: $(STAMP)
	nice -n 10 $(PYTHON) -m segdeploy fixtures --model all $(if $(FORCE),--force,)

lint: $(STAMP)
	$(PYTHON) -m ruff check segdeploy tests benchmarks

clean:
	rm -rf .make artifacts build *.egg-info .pytest_cache
