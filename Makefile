# Two commands for a fresh machine (see README.md):
#   make book   create .venv, generate the synthetic cohort, run every stage, build the book
#   make test   create .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel on machines that carry it locally; the usual wheels elsewhere.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv book test clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

book: venv
	$(BIN)/labecg book

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf _build data runs book/notebooks artifacts
