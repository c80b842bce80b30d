# Every target creates .venv and installs what it needs when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-0

.PHONY: install test demo lint bench-surgery clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,examples]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q tests

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) examples/demo.py

lint: $(STAMP)
	$(PY) -m ruff check tfchannelprune tests examples benchmarks

bench-surgery: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/surgery.py

clean:
	rm -rf $(VENV) build *.egg-info
