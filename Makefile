# The two commands of the README. Both create .venv when it is missing and install torch from the
# CPU wheel *before* the package, so that no dependency can pull a CUDA build of torch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.posenc-installed
TORCH_VERSION ?= 2.13.0

.PHONY: demo test install clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/posenc list
	$(BIN)/posenc check

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
