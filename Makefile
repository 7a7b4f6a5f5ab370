# The two set-up commands of the README: `make demo` (the main job, on the CPU) and `make test`.
# PYTEST_ARGS: extra pytest options for `make test` (e.g. -n 2 where pytest-xdist is installed).
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := .make/installed

.PHONY: install demo test test-full test-cpp cpp lint bench fixtures trt-bindings clean

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
	$(PYTHON) -m segdeploy export --model $(DEMO_MODEL) --fmt onnx --size 512x512 --force
	$(PYTHON) -m segdeploy validate artifacts/$(DEMO_MODEL)_512x512.onnx --n 4 --images tests/data/images \
		--json artifacts/$(DEMO_MODEL)_512x512.validate.json --force
	$(PYTHON) -m segdeploy bench --model $(DEMO_MODEL) --backend torch,onnxruntime --batch 1 --min-s 2 \
		--md artifacts/$(DEMO_MODEL)_bench.md --json artifacts/$(DEMO_MODEL)_bench.json --force
	$(PYTHON) -m segdeploy predict --model $(DEMO_MODEL) --source tests/data/images/grace_hopper.jpg \
		--output artifacts/grace_hopper_$(DEMO_MODEL).png --force

test: $(STAMP)
	@# the real-bindings tests skip with the harness's reason where it cannot be prepared; CI must prepare it
	@$(PYTHON) scripts/trt_bindings.py || { [ -z "$$CI" ] && echo "TensorRT binding tests will be SKIPPED (reason above); CI runs them"; }
	$(PYTHON) -m ruff check segdeploy tests benchmarks setup.py
	$(PYTHON) -m pytest -q -rs -m "not slow" $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-cpp

# NVIDIA's real TensorRT Python bindings (10.3, the newest 10.x, 11.4) over link stubs, for the TensorRT tests on
# machines without TensorRT or a GPU (scripts/trt_bindings.py; about 4 MB fetched once, cached in build/).
trt-bindings:
	$(PYTHON) scripts/trt_bindings.py

# The C++ library (cpp/README.md): its toolchain from Debian and PyPI (cpp/install-deps.sh, idempotent), then CMake.
CPP_BUILD ?= build/cpp
CPP_DEPS ?= build/cpp-deps
CPP_CONFIGURE = cmake -S cpp -B $(CPP_BUILD) -DCMAKE_BUILD_TYPE=Release -DSEGDEPLOY_DEPS_DIR=$(abspath $(CPP_DEPS)) \
	-DSEGDEPLOY_PYTHON=$$(command -v $(PYTHON))

cpp:
	PYTHON=$(PYTHON) bash cpp/install-deps.sh $(CPP_DEPS)
	$(CPP_CONFIGURE)
	cmake --build $(CPP_BUILD) -j$$(nproc)

# install-deps.sh exits 3 where it cannot install anything (not root, no sudo, no apt): the C++ tests are then
# skipped with its reason, except under CI, where they must run.
test-cpp: $(STAMP)
	@PYTHON=$(PYTHON) bash cpp/install-deps.sh $(CPP_DEPS); rc=$$?; \
	if [ $$rc -eq 3 ] && [ -z "$$CI" ]; then \
		echo "C++ tests SKIPPED: the toolchain cannot be installed here (reason above); CI runs them"; exit 0; \
	elif [ $$rc -ne 0 ]; then exit $$rc; fi; \
	$(CPP_CONFIGURE) >/dev/null && cmake --build $(CPP_BUILD) -j$$(nproc) && \
	cd $(CPP_BUILD) && ctest -j2 --output-on-failure

test-full: $(STAMP)
	@$(PYTHON) scripts/trt_bindings.py || { [ -z "$$CI" ] && echo "TensorRT binding tests will be SKIPPED (reason above); CI runs them"; }
	$(PYTHON) -m pytest -q -rs $(PYTEST_ARGS)

# SegNeXt-T on PyTorch (both layouts) and ONNX Runtime, about a minute on a quiet machine; the CPU matrix is
# `python benchmarks/run_cpu_matrix.py` (see benchmarks/README.md).
bench: $(STAMP)
	$(PYTHON) -m segdeploy bench --model segnext_t --backend torch,onnxruntime --layout nchw,channels_last \
		--md artifacts/bench/segnext_t.md --json artifacts/bench/segnext_t.json --force

# The accuracy fixtures: each T variant (and a low-margin cgrseg_t) trained on the synthetic dataset on the CPU,
# cached under ~/.cache/segdeploy/fixtures (or $$SEGDEPLOY_CACHE/fixtures); cached ones are reused, FORCE=1 retrains.
fixtures: $(STAMP)
	nice -n 10 $(PYTHON) -m segdeploy fixtures --model all $(if $(FORCE),--force,)

lint: $(STAMP)
	$(PYTHON) -m ruff check segdeploy tests benchmarks setup.py

clean:
	rm -rf .make artifacts build *.egg-info .pytest_cache
