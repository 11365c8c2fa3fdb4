# Two entry points, both self-contained on a fresh machine: `make demo` and `make test`.
# PYTHON picks the interpreter that creates .venv; TORCH_SPEC lets a GPU user choose their torch build.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_OUT ?= runs/quickstart

.PHONY: demo test lint venv install install-dev fonts

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first, pinned, so that pip does not resolve a multi-GB build it does not need.
venv: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"

install: venv fonts
	$(PIP) install -q -e .

# FigStep's official images use FreeMonoBold (Debian fonts-freefont-ttf); no PyPI package ships it. The demo needs
# it as much as the tests: its Magic Image trains on FigStep-style renders, and another font trains another image.
FREEFONT := /usr/share/fonts/truetype/freefont/FreeMonoBold.ttf
fonts:
	@test -f $(FREEFONT) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && apt-get install -y -qq fonts-freefont-ttf fonts-liberation >/dev/null; } \
	  || echo "warning: FreeMonoBold missing (apt-get install fonts-freefont-ttf): FigStep images will differ"

install-dev: venv fonts
	$(PIP) install -q -e ".[dev]"
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "warning: chromium missing (apt-get install chromium): the HTML report render test will fail"

demo: install
	$(VENV)/bin/visalign quickstart --out $(DEMO_OUT)

test: install-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: install-dev
	$(VENV)/bin/ruff check src tests benchmarks
