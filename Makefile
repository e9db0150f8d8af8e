# The two commands of the README. Both create .venv when it is missing and install torch from the
# CPU wheel *before* the package, so that no dependency can pull a CUDA build of torch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.posenc-installed
TORCH_VERSION ?= 2.13.0

.PHONY: demo test install clean browser wheel-check

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/posenc list
	$(BIN)/posenc check
	$(BIN)/posenc run all --quick
	$(BIN)/posenc bench --quick --json posenc-out/bench.json
	$(BIN)/posenc atlas --force  # the atlas is a view of the results: regenerated on every demo

# Debian's chromium for the atlas's browser test (CI runs as root with apt-get)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is missing and cannot be installed here (needs root and apt-get): browser tests will skip"; fi; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# the wheel in a fresh venv with the core dependencies only, used from outside the repository (CI runs it)
wheel-check:
	bash .ci/wheel-check

clean:
	rm -rf $(VENV) build *.egg-info
