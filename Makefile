# Two commands set everything up on a machine with Python 3.11, a C compiler and make:
#   make run    the sidecar on 127.0.0.1:50051 with a generated demo fleet
#   make test   the whole test suite, real sidecar processes included
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STUBS := clients/python/placecheck/v1
PROTOS := $(wildcard proto/placecheck/v1/*.proto)
PYX := engine/_fastfilters.pyx $(wildcard engine/*.pxi engine/rules/*.pxi)

.PHONY: all run test bench clean proto build

all: build

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(STUBS)/.generated: $(VENV)/.installed $(PROTOS)
	mkdir -p $(STUBS)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=clients/python --pyi_out=clients/python \
		--grpc_python_out=clients/python $(PROTOS)
	touch $(STUBS)/__init__.py $@

proto: $(STUBS)/.generated

$(VENV)/.built: $(STUBS)/.generated $(PYX) setup.py pyproject.toml
	$(PY) setup.py -q build_ext --inplace
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

build: $(VENV)/.built

run: build
	$(VENV)/bin/placecheck serve

test: build
	$(PY) -m pytest -q

bench: build
	$(PY) -m bench

clean:
	rm -rf $(VENV) build engine/_fastfilters.c engine/*.so $(STUBS) *.egg-info
