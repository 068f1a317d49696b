# Two commands set everything up on a machine with Python 3.11, a C compiler and make:
#   make run    the sidecar on 127.0.0.1:50051 with a generated demo fleet (ARGS="..." adds serve options)
#   make test   the whole test suite, real sidecar processes included
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STUBS := clients/python/placecheck/v1
PROTOS := $(wildcard proto/placecheck/v1/*.proto)
PYX := engine/_fastfilters.pyx $(wildcard engine/*.pxi engine/rules/*.pxi)

.PHONY: all run test bench clean proto build placement nova dashboard prometheus

all: build

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $@

# The Python client (placecheck-client, clients/python) installed editable: its build generates
# the stubs beside its sources, as a wheel build does into the wheel.
$(STUBS)/.generated: $(VENV)/.installed $(PROTOS) clients/python/setup.py clients/python/pyproject.toml
	$(PY) -m pip install -q --no-deps --no-build-isolation -e clients/python
	touch $@

proto: $(STUBS)/.generated

$(VENV)/.built: $(STUBS)/.generated $(PYX) setup.py pyproject.toml
	$(PY) setup.py -q build_ext --inplace
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

build: $(VENV)/.built

# make run ARGS="--listen 127.0.0.1:6000 --fleet etc/example-fleet.json": any `placecheck serve`
# options; a --fleet file replaces the demo fleet (the state directory is temporary either way).
run: build
	$(VENV)/bin/placecheck serve --demo $(ARGS)

test: build placement nova prometheus
	$(PY) -m pytest -q

bench: build
	$(PY) -m bench

# The Grafana dashboard, generated from deploy/grafana/dashboard.py (tests/test_dashboard.py
# fails when the checked-in JSON differs).
dashboard: $(VENV)/.installed
	$(PY) deploy/grafana/dashboard.py > deploy/grafana/placecheck.json

# Debian's prometheus (with promtool) for the alert rules' tests and a real Prometheus scraping
# the sidecar: installed once behind a stamp, by apt-get when running as root. Otherwise make
# says so and those tests skip, naming the reason.
PROMETHEUS_STAMP := $(VENV)/.prometheus

$(PROMETHEUS_STAMP): $(VENV)/.installed
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then touch $@; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		if (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus) \
			>$(VENV)/prometheus.log 2>&1; then touch $@; \
		else echo "prometheus did not install (see $(VENV)/prometheus.log): its tests will skip"; fi; \
	else echo "prometheus not found and not root to install it: its tests will skip"; fi

prometheus: $(PROMETHEUS_STAMP)

# Real OpenStack services for the feeder's tests (Placement, nova-api), each in a venv of its own
# (their dependencies are not placecheck's). When one cannot be installed, make says so, the log
# stays in <venv>.log and the tests that need it skip, naming the log.
PLACEMENT_VENV := .venv-placement
NOVA_VENV := .venv-nova

# $(call service_venv,VENV,REQUIREMENTS,PACKAGE)
define service_venv
	@if $(PYTHON) -m venv $(1) >$(1).log 2>&1 \
		&& $(1)/bin/pip install -q -r $(2) >>$(1).log 2>&1; then \
		touch $(1)/.installed; \
	else echo "$(3) did not install (see $(1).log): its tests will skip"; fi
endef

$(PLACEMENT_VENV)/.installed: requirements-placement.txt
	$(call service_venv,$(PLACEMENT_VENV),requirements-placement.txt,openstack-placement)

$(NOVA_VENV)/.installed: requirements-nova.txt
	$(call service_venv,$(NOVA_VENV),requirements-nova.txt,nova)

placement: $(PLACEMENT_VENV)/.installed
nova: $(NOVA_VENV)/.installed

clean:
	rm -rf $(VENV) $(PLACEMENT_VENV) $(PLACEMENT_VENV).log $(NOVA_VENV) $(NOVA_VENV).log build engine/_fastfilters.c engine/*.so $(STUBS) *.egg-info clients/python/build clients/python/*.egg-info

# The Node.js and Go clients (clients/node, clients/go). Their dependencies install once, behind
# stamp files, like the venv; without npm or go the targets say so and the clients' tests skip.
NODE_CLIENT := clients/node
GO_CLIENT := clients/go
GO_BIN := $(GO_CLIENT)/.bin
GO_GEN := $(GO_CLIENT)/gen/placecheck/v1

.PHONY: node-client go-client clean-clients

# npm ci runs the package's prepare script, which copies proto/ into it: again when a proto changes.
$(NODE_CLIENT)/node_modules/.installed: $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json $(NODE_CLIENT)/scripts/copy-protos.js $(PROTOS)
	@if command -v npm >/dev/null 2>&1; then \
		set -e; cd $(NODE_CLIENT); npm ci --no-audit --no-fund --loglevel=error; touch node_modules/.installed; \
	else echo "npm not found: the Node.js client is not installed and its tests will skip"; fi

node-client: $(NODE_CLIENT)/node_modules/.installed

# protoc-gen-go and protoc-gen-go-grpc at the versions go.mod's `tool` lines pin, into clients/go/.bin.
$(GO_BIN)/.installed: $(GO_CLIENT)/go.mod $(GO_CLIENT)/go.sum
	@if command -v go >/dev/null 2>&1; then \
		set -e; cd $(GO_CLIENT); go mod download; GOBIN="$$PWD/.bin" go install tool; touch .bin/.installed; \
	else echo "go not found: the Go client is not built and its tests will skip"; fi

# The Go stubs are generated with the venv's protoc whenever a proto changes, into gen/, which is
# committed (a module fetched with `go get` is what its tag holds; tests/test_packaging.py fails
# when the committed stubs differ from what the protos generate); `go build` then compiles gRPC
# once into Go's build cache.
GO_MODULE := $(shell sed -n 's/^module //p' $(GO_CLIENT)/go.mod)

$(GO_GEN)/.generated: $(GO_BIN)/.installed $(VENV)/.installed $(PROTOS)
	@if [ -x $(GO_BIN)/protoc-gen-go ] && command -v go >/dev/null 2>&1; then \
		set -ex; rm -rf $(GO_GEN); mkdir -p $(GO_GEN); \
		$(PY) -m grpc_tools.protoc -Iproto \
			--plugin=protoc-gen-go=$(GO_BIN)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(GO_BIN)/protoc-gen-go-grpc \
			--go_out=$(GO_CLIENT) --go_opt=module=$(GO_MODULE) \
			--go-grpc_out=$(GO_CLIENT) --go-grpc_opt=module=$(GO_MODULE) $(PROTOS); \
		(cd $(GO_CLIENT) && go build ./...); touch $@; \
	fi

go-client: $(GO_GEN)/.generated

# The Java client (clients/java): Maven fetches its dependencies, protoc and the gRPC plugin once,
# generates the stubs and runs its unit test (which fetches Surefire's JUnit provider), so that
# its tests then run offline (`mvn -o`); without mvn or java its tests skip.
JAVA_CLIENT := clients/java

.PHONY: java-client

$(JAVA_CLIENT)/.installed: $(JAVA_CLIENT)/pom.xml
	@if command -v mvn >/dev/null 2>&1 && command -v java >/dev/null 2>&1; then \
		set -e; cd $(JAVA_CLIENT); mvn -q -B dependency:go-offline test -Dtest=RetryInfoPushbackTest; touch .installed; \
	else echo "mvn or java not found: the Java client is not built and its tests will skip"; fi

java-client: $(JAVA_CLIENT)/.installed

test: node-client go-client java-client

# buf (the proto's lint and breaking-change checks, buf.yaml), kubeconform (deploy/kubernetes'
# schema check) and ghz (gRPC load through one connection or several) from the Go module proxy,
# into .tools/bin once behind stamps naming their versions; without go make says so and their
# tests skip.
TOOLS_BIN := .tools/bin
BUF_VERSION := v1.75.0
KUBECONFORM_VERSION := v0.8.0
GHZ_VERSION := v0.93.0

.PHONY: tools clean-tools

# $(call go_tool,PACKAGE,VERSION)
define go_tool
	@if command -v go >/dev/null 2>&1; then \
		set -e; mkdir -p $(TOOLS_BIN); GOBIN="$$PWD/$(TOOLS_BIN)" go install $(1)@$(2); touch $@; \
	else echo "go not found: $(1) is not installed and its tests will skip"; fi
endef

$(TOOLS_BIN)/.buf-$(BUF_VERSION):
	$(call go_tool,github.com/bufbuild/buf/cmd/buf,$(BUF_VERSION))

$(TOOLS_BIN)/.kubeconform-$(KUBECONFORM_VERSION):
	$(call go_tool,github.com/yannh/kubeconform/cmd/kubeconform,$(KUBECONFORM_VERSION))

$(TOOLS_BIN)/.ghz-$(GHZ_VERSION):
	$(call go_tool,github.com/bojand/ghz/cmd/ghz,$(GHZ_VERSION))

tools: $(TOOLS_BIN)/.buf-$(BUF_VERSION) $(TOOLS_BIN)/.kubeconform-$(KUBECONFORM_VERSION) $(TOOLS_BIN)/.ghz-$(GHZ_VERSION)

test: tools

clean-clients:
	rm -rf $(NODE_CLIENT)/node_modules $(NODE_CLIENT)/proto $(NODE_CLIENT)/LICENSE $(GO_BIN) $(JAVA_CLIENT)/target $(JAVA_CLIENT)/.installed

clean-tools:
	rm -rf $(TOOLS_BIN)

clean: clean-clients clean-tools
