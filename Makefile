# `make demo` and `make test` build .venv from scratch when it is missing, then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test venv clean

$(BIN)/forensics: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[app,dev]"
	touch $(BIN)/forensics

venv: $(BIN)/forensics

demo: venv
	$(BIN)/forensics demo

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs/demo
