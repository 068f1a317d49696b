"""deploy/: the Kubernetes sidecar manifest against Kubernetes' schemas (kubeconform), the systemd unit
(systemd-analyze verify)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar import REPO

MANIFEST = REPO / "deploy" / "kubernetes" / "placecheck-sidecar.yaml"
UNIT = REPO / "deploy" / "systemd" / "placecheck.service"
KUBECONFORM = REPO / ".tools" / "bin" / "kubeconform"  # make tools, from the Go module proxy
KUBERNETES_VERSION = "v1.37.0"
KINDS = ("deployment-apps-v1",)  # every kind the manifests use, as kubeconform names its schema files


def standalone_schemas(directory: Path) -> Path:
    """Kubernetes' strict JSON schemas for KINDS, each made standalone, in kubeconform's layout.

    kubeconform downloads its schemas from GitHub at run time; kubernetes-validate (PyPI) ships
    them, but as files referring to a shared /api/_definitions.json that kubeconform cannot
    resolve, so each gets those definitions under its own "$defs"."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate ships the schemas")
    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"{KUBERNETES_VERSION}-local-strict"
    definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
    target = directory / f"{KUBERNETES_VERSION}-standalone-strict"
    target.mkdir(parents=True)
    for kind in KINDS:
        text = (source / f"{kind}.json").read_text()
        schema = json.loads(text.replace('"/api/_definitions.json#/$defs/', '"#/$defs/'))
        schema["$defs"] = json.loads(json.dumps(definitions).replace('"/api/_definitions.json#/$defs/', '"#/$defs/'))
        (target / f"{kind}.json").write_text(json.dumps(schema))
    return directory


def kubeconform(*paths: Path, schemas: Path) -> subprocess.CompletedProcess:
    if not KUBECONFORM.exists():
        pytest.skip("kubeconform is not installed: `make tools` builds it with go (go not found when it ran)")
    return subprocess.run([str(KUBECONFORM), "-strict", "-summary", "-kubernetes-version", KUBERNETES_VERSION.lstrip("v"),
                           "-schema-location", str(schemas), *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_the_kubernetes_manifest_matches_kubernetes_schemas(tmp_path):
    schemas = standalone_schemas(tmp_path / "schemas")
    checked = kubeconform(MANIFEST, schemas=schemas)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Valid: 1, Invalid: 0, Errors: 0, Skipped: 0" in checked.stdout


def test_kubeconform_refuses_a_broken_manifest(tmp_path):
    """The check can fail: a misspelt field and a port that is not a number."""
    schemas = standalone_schemas(tmp_path / "schemas")
    broken = tmp_path / "broken.yaml"
    broken.write_text(MANIFEST.read_text().replace("sizeLimit: 512Mi", "sizeLimt: 512Mi", 1))
    checked = kubeconform(broken, schemas=schemas)
    assert checked.returncode == 1 and "Invalid: 1" in checked.stdout, checked.stdout + checked.stderr
    assert "sizeLimt" in checked.stdout


def test_the_manifest_runs_the_commands_and_probes_the_sidecar_has():
    """Every placecheck option the manifest passes exists, and the probes ask services the sidecar serves."""
    from placecheck_server.cli import build_parser
    from placecheck_server.standard_services import LIVENESS_SERVICE

    text = MANIFEST.read_text()
    for block in re.findall(r"args:\n((?:\s+- .+\n)+)", text):
        args = [re.sub(r"\s+#.*", "", line.strip()[2:]) for line in block.splitlines()]
        build_parser().parse_args(args)  # exits 2 on an unknown option
    assert set(re.findall(r"service: (\S+)", text)) == {LIVENESS_SERVICE, "placecheck.v1.PlacementCheck"}


def systemd_verify(unit_text: str, directory: Path) -> str:
    """systemd-analyze verify's complaints about the unit (it exits 0 for unknown keys and bad values)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not found")
    # The unit names /usr/bin/placecheck, the installed console script; here it is the venv's.
    unit = directory / UNIT.name
    unit.write_text(unit_text.replace("/usr/bin/placecheck", str(Path(sys.executable).with_name("placecheck"))))
    verified = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    return "\n".join(line for line in (verified.stdout + verified.stderr).splitlines() if UNIT.name in line) \
        or ("" if verified.returncode == 0 else verified.stderr)


def test_the_systemd_unit_verifies(tmp_path):
    assert systemd_verify(UNIT.read_text(), tmp_path) == ""


def test_systemd_verify_finds_a_broken_unit(tmp_path):
    broken = UNIT.read_text().replace("Restart=on-failure", "Restart=sometimes").replace("KillMode=", "KilMode=")
    complaints = systemd_verify(broken, tmp_path)
    assert "sometimes" in complaints and "KilMode" in complaints
