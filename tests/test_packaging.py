"""The packages install from what the build produces and work against a live sidecar.

From a copy of the repository's tracked files (what a clean clone holds, without the venv, the
compiled kernel or any generated stubs): `python -m build` makes the sidecar's sdist and then its
wheel from that sdist, `python -m build clients/python` the client-only distribution's. The
sidecar's wheel installs into a fresh venv and serves (its own console script, its own kernel);
placecheck-client installs into another, without numpy, and calls it; so do the Node package
(`npm pack`, installed into an empty directory) and the Go module (a module of its own that
requires it by its path, replaced by the directory).

The builds run in the project venv (`--no-isolation`, which still checks pyproject's build
requirements are installed); the fresh venvs install the dependencies with pip from the index at
requirements.txt's versions (the pip cache serves them). A test skips only where npm or go is
absent.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from sidecar import REPO, start_sidecar

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
GO_MODULE = "github.com/placecheck/placecheck/clients/go"
BUILD_TIMEOUT_S = 300.0
INSTALL_TIMEOUT_S = 300.0
# etc/example-fleet.json: compute-a1 has room for this request, compute-a2 has 4,560 MB of memory left.
REQUEST_VCPU, REQUEST_MEMORY_MB = 2, 8192
ROOMY, FULL = "compute-a1", "compute-a2"


def run(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = INSTALL_TIMEOUT_S) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"`{' '.join(map(str, command))}` exited {result.returncode}:\n{output[-6000:]}"
    return result.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what points at the checkout or the project venv."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("PYTHONPATH", "VIRTUAL_ENV", "PLACECHECK_PROTO_DIR")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The repository's tracked files as the working tree has them, copied."""
    copy = tmp_path_factory.mktemp("checkout")
    names = run(["git", "ls-files", "-z"], cwd=REPO).split("\0")
    for name in filter(None, names):
        source = REPO / name
        if source.exists() or source.is_symlink():  # a tracked file deleted in the working tree is left out
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name, follow_symlinks=False)
    return copy


@pytest.fixture(scope="module")
def dists(checkout, tmp_path_factory) -> dict[str, Path]:
    """sidecar/client -> the directory holding its sdist and wheel."""
    out = tmp_path_factory.mktemp("dist")
    built = {}
    for name, project in (("sidecar", checkout), ("client", checkout / "clients" / "python")):
        built[name] = out / name
        env = clean_env()
        env.pop("PLACECHECK_MARCH", None)  # a wheel's default: the baseline instruction set
        run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(built[name]), str(project)],
            env=env, timeout=BUILD_TIMEOUT_S)
    return built


def only(directory: Path, pattern: str) -> Path:
    (found,) = directory.glob(pattern)
    return found


def fresh_venv(directory: Path, *wheels: Path) -> Path:
    """A new venv with `wheels` installed (by file, so that no same-named project on the index can
    stand in for them) and their dependencies from the index."""
    venv.create(directory, with_pip=True)
    run([str(directory / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--constraint", str(REPO / "requirements.txt"), *map(str, wheels)], env=clean_env())
    return directory


def site_packages(environment: Path) -> Path:
    return only(environment / "lib", "python*/site-packages")


def test_sdist_carries_the_kernel_sources_and_the_wheels_split_the_names(dists, checkout):
    with tarfile.open(only(dists["sidecar"], "placecheck-*.tar.gz")) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    kernel_sources = {str(path.relative_to(checkout)) for pattern in ("engine/*.pyx", "engine/*.pxi", "engine/rules/*.pxi")
                      for path in checkout.glob(pattern)}
    assert kernel_sources and kernel_sources <= members, kernel_sources - members
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "setup.py"} <= members
    assert "engine/_fastfilters.c" not in members  # Cython's output: the build from the sdist makes it

    sidecar_wheel = zipfile.ZipFile(only(dists["sidecar"], "placecheck-*.whl")).namelist()
    client_wheel = zipfile.ZipFile(only(dists["client"], "placecheck_client-*.whl")).namelist()
    assert {name.split("/")[0] for name in sidecar_wheel} == {
        "placecheck_engine", "placecheck_server", f"placecheck-{VERSION}.dist-info"}
    assert any(name.startswith("placecheck_engine/_fastfilters.") and name.endswith(".so") for name in sidecar_wheel)
    assert {name.split("/")[0] for name in client_wheel} == {"placecheck", f"placecheck_client-{VERSION}.dist-info"}
    assert {"placecheck/client.py", "placecheck/v1/placement_pb2.py", "placecheck/v1/state_pb2_grpc.py"} <= set(client_wheel)
    assert not set(sidecar_wheel) & set(client_wheel)

    with tarfile.open(only(dists["client"], "placecheck_client-*.tar.gz")) as sdist:
        client_members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    protos = {f"proto/{path.relative_to(checkout / 'proto')}" for path in (checkout / "proto").rglob("*.proto")}
    assert protos and protos <= client_members, protos - client_members
    assert not any(name.startswith("placecheck/v1/") for name in client_members)  # generated at build time


def test_one_version_number():
    assert f"placecheck-client=={VERSION}" in PYPROJECT["project"]["dependencies"]
    assert json.loads((REPO / "clients" / "node" / "package.json").read_text())["version"] == VERSION
    assert f"## {VERSION}" in (REPO / "CHANGELOG.md").read_text()


@pytest.fixture(scope="module")
def sidecar_venv(dists, tmp_path_factory) -> Path:
    return fresh_venv(tmp_path_factory.mktemp("sidecar-venv"), only(dists["sidecar"], "placecheck-*.whl"),
                      only(dists["client"], "placecheck_client-*.whl"))


@pytest.fixture(scope="module")
def installed_sidecar(sidecar_venv):
    """The installed wheel's own `placecheck serve`, on the example fleet."""
    with start_sidecar(workers=1, fleet=REPO / "etc" / "example-fleet.json",
                       placecheck=(str(sidecar_venv / "bin" / "placecheck"),)) as running:
        yield running


def test_the_sidecar_wheel_installs_its_own_names_and_version(sidecar_venv, tmp_path):
    installed = {path.name for path in site_packages(sidecar_venv).iterdir()}
    assert {"placecheck_engine", "placecheck_server", "placecheck"} <= installed
    assert not {"engine", "server"} & installed
    assert run([str(sidecar_venv / "bin" / "placecheck"), "--version"]).strip() == f"placecheck {VERSION}"
    # Every module imports from the installed names alone (the working directory is not the checkout).
    run([str(sidecar_venv / "bin" / "python"), "-c",
         "import importlib, pkgutil, placecheck_engine, placecheck_server\n"
         "for package in (placecheck_engine, placecheck_server):\n"
         "    for module in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
         "        importlib.import_module(module.name)\n"], cwd=tmp_path, env=clean_env())


def test_the_installed_sidecar_serves_and_reports_its_version(installed_sidecar):
    import urllib.request

    with urllib.request.urlopen(installed_sidecar.metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    build_info = [line for line in metrics.splitlines() if line.startswith("placecheck_build_info{")]
    assert build_info and f'version="{VERSION}"' in build_info[0], build_info


PYTHON_CALL = f"""
import importlib.util, json, os
from placecheck import PlacementClient, StateClient
from placecheck.v1 import placement_pb2

with StateClient(os.environ["STATE_TARGET"]) as state, PlacementClient(os.environ["DECISION_TARGET"], channels=1) as client:
    hosts = state.status(timeout=10).host_count
    answer = client.check_destination(placement_pb2.PlacementRequest(
        resources={{"VCPU": {REQUEST_VCPU}, "MEMORY_MB": {REQUEST_MEMORY_MB}}}), ["{ROOMY}", "{FULL}"], timeout=10)
print(json.dumps({{"numpy": importlib.util.find_spec("numpy") is not None, "hosts": hosts,
                  "verdicts": [[v.host, v.allowed, [r.rule for r in v.rejections]] for v in answer.verdicts]}}))
"""


def assert_roomy_allowed_full_refused(verdicts):
    assert [(host, allowed) for host, allowed, _ in verdicts] == [(ROOMY, True), (FULL, False)], verdicts
    assert any("MEMORY_MB" in rule for rule in verdicts[1][2]), verdicts


def test_the_client_only_distribution_calls_the_sidecar_without_numpy(dists, installed_sidecar, tmp_path):
    environment = fresh_venv(tmp_path / "client-venv", only(dists["client"], "placecheck_client-*.whl"))
    installed = {path.name for path in site_packages(environment).iterdir()}
    assert not {"placecheck_engine", "placecheck_server", "numpy"} & installed
    output = run([str(environment / "bin" / "python"), "-c", PYTHON_CALL], cwd=tmp_path,
                 env=clean_env(DECISION_TARGET=installed_sidecar.decision_target,
                               STATE_TARGET=installed_sidecar.state_target))
    result = json.loads(output)
    assert result["numpy"] is False
    assert result["hosts"] == 4  # etc/example-fleet.json
    assert_roomy_allowed_full_refused(result["verdicts"])


NODE_CALL = f"""
const {{PlacementClient}} = require('placecheck-client');
const client = new PlacementClient(process.env.DECISION_TARGET, {{channels: 1}});
client.checkDestination({{resources: {{VCPU: {REQUEST_VCPU}, MEMORY_MB: {REQUEST_MEMORY_MB}}}}},
                        ['{ROOMY}', '{FULL}'], {{timeoutMs: 10000}})
  .then((answer) => console.log(JSON.stringify(
    answer.verdicts.map((v) => [v.host, v.allowed, v.rejections.map((r) => r.rule)]))))
  .finally(() => client.close());
"""


@pytest.mark.skipif(shutil.which("npm") is None or shutil.which("node") is None,
                    reason="node/npm is not installed: the Node package is not packed")
def test_the_packed_node_package_carries_its_protos_and_calls_the_sidecar(checkout, installed_sidecar, tmp_path):
    package_dir = checkout / "clients" / "node"
    tarball = package_dir / run(["npm", "pack", "--silent"], cwd=package_dir).strip().splitlines()[-1]
    with tarfile.open(tarball) as packed:
        names = set(packed.getnames())
        manifest = json.load(packed.extractfile("package/package.json"))
    protos = {f"package/proto/{path.relative_to(checkout / 'proto')}" for path in (checkout / "proto").rglob("*.proto")}
    assert protos <= names and "package/LICENSE" in names, names
    assert not manifest.get("private") and manifest["license"] == "Apache-2.0"

    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "packaging-check", "version": "0.0.0", "private": true}')
    run(["npm", "install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error", str(tarball)], cwd=app)
    output = run(["node", "-e", NODE_CALL], cwd=app,
                 env=clean_env(DECISION_TARGET=installed_sidecar.decision_target))
    assert_roomy_allowed_full_refused(json.loads(output))


GO_CALL = f"""package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	placecheck "{GO_MODULE}"
	pb "{GO_MODULE}/gen/placecheck/v1"
)

func main() {{
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := placecheck.NewPlacementClient(os.Getenv("DECISION_TARGET"), 1)
	if err != nil {{
		panic(err)
	}}
	defer client.Close()
	request := &pb.PlacementRequest{{Resources: map[string]int64{{"VCPU": {REQUEST_VCPU}, "MEMORY_MB": {REQUEST_MEMORY_MB}}}}}
	answer, err := client.CheckDestination(ctx, request, []string{{"{ROOMY}", "{FULL}"}}, 0)
	if err != nil {{
		panic(err)
	}}
	verdicts := [][]any{{}}[:0]
	for _, verdict := range answer.GetVerdicts() {{
		rules := []string{{}}
		for _, rejection := range verdict.GetRejections() {{
			rules = append(rules, rejection.GetRule())
		}}
		verdicts = append(verdicts, []any{{verdict.GetHost(), verdict.GetAllowed(), rules}})
	}}
	out, _ := json.Marshal(verdicts)
	fmt.Println(string(out))
}}
"""


@pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed: the Go module is not checked")
def test_the_go_module_resolves_by_its_path_and_calls_the_sidecar(checkout, installed_sidecar, tmp_path):
    module_dir = checkout / "clients" / "go"
    go_mod = (module_dir / "go.mod").read_text()
    assert go_mod.startswith(f"module {GO_MODULE}\n"), go_mod.splitlines()[0]
    go_version = next(line for line in go_mod.splitlines() if line.startswith("go "))
    app = tmp_path / "app"
    app.mkdir()
    (app / "go.mod").write_text(f"module example.com/packagingcheck\n\n{go_version}\n\n"
                                f"require {GO_MODULE} v0.0.0\n\nreplace {GO_MODULE} => {module_dir}\n")
    shutil.copy(module_dir / "go.sum", app / "go.sum")  # the client's dependencies, as it pins them
    (app / "main.go").write_text(GO_CALL)
    env = clean_env(DECISION_TARGET=installed_sidecar.decision_target, GOFLAGS="-mod=mod")
    output = run(["go", "run", "."], cwd=app, env=env)
    assert_roomy_allowed_full_refused(json.loads(output))


@pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed: the Go stubs are not generated")
def test_the_committed_go_stubs_are_what_the_protos_generate(tmp_path):
    plugins = REPO / "clients" / "go" / ".bin"
    assert (plugins / ".installed").exists(), "the Go protoc plugins are not installed: run `make go-client`"
    protos = sorted(str(path.relative_to(REPO / "proto")) for path in (REPO / "proto").rglob("*.proto"))
    run([sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'proto'}",
         f"--plugin=protoc-gen-go={plugins / 'protoc-gen-go'}",
         f"--plugin=protoc-gen-go-grpc={plugins / 'protoc-gen-go-grpc'}",
         f"--go_out={tmp_path}", f"--go_opt=module={GO_MODULE}",
         f"--go-grpc_out={tmp_path}", f"--go-grpc_opt=module={GO_MODULE}", *protos])
    generated = {str(path.relative_to(tmp_path)): path.read_text() for path in tmp_path.rglob("*.go")}
    # What git holds (the index: what a commit would carry), not the working tree make rewrites.
    committed = {name: run(["git", "show", f":clients/go/{name}"], cwd=REPO)
                 for name in filter(None, run(["git", "ls-files", "gen"], cwd=REPO / "clients" / "go").split("\n"))}
    assert generated.keys() == committed.keys() and generated == committed, \
        "clients/go/gen differs from what proto/ generates: run `make go-client` and commit clients/go/gen"
