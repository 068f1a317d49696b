"""Builds placecheck-client, generating the gRPC stubs (placecheck/v1) from the protos.

From a checkout the protos and the version come from the repository root (proto/ and the
sidecar's pyproject.toml, the one version number); an sdist carries a copy of the protos and
its PKG-INFO names the version, so a wheel builds from the sdist alone.
"""
import shutil
import tomllib
from email.parser import Parser
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent.parent
SDIST_PROTOS = HERE / "proto"  # only in an sdist (make_release_tree below)


def protos_root() -> Path:
    return SDIST_PROTOS if SDIST_PROTOS.is_dir() else CHECKOUT / "proto"


def version() -> str:
    pkg_info = HERE / "PKG-INFO"  # only in an sdist
    if pkg_info.exists():
        return Parser().parsestr(pkg_info.read_text())["Version"]
    return tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["version"]


def generate_stubs(out: Path) -> None:
    """placecheck/v1/*_pb2.py, *_pb2.pyi and *_pb2_grpc.py under `out`."""
    from grpc_tools import protoc  # a build requirement (pyproject.toml)

    root = protos_root()
    protos = sorted(str(path.relative_to(root)) for path in (root / "placecheck" / "v1").glob("*.proto"))
    if not protos:
        raise SystemExit(f"no protos under {root / 'placecheck' / 'v1'}")
    (out / "placecheck" / "v1").mkdir(parents=True, exist_ok=True)
    # protoc's own well-known types (google/protobuf/*.proto) ship inside grpc_tools.
    well_known = Path(protoc.__file__).parent / "_proto"
    status = protoc.main(["grpc_tools.protoc", f"-I{root}", f"-I{well_known}", f"--python_out={out}",
                          f"--pyi_out={out}", f"--grpc_python_out={out}", *protos])
    if status:
        raise SystemExit(f"protoc exited {status}")
    (out / "placecheck" / "v1" / "__init__.py").touch()


class BuildPyWithStubs(build_py):
    """An editable install (make build) generates the stubs beside the sources, a wheel into its
    build directory: the source tree's placecheck/v1 is never packaged from, so a stale one
    cannot ship."""

    def run(self):
        generate_stubs(HERE if self.editable_mode else Path(self.build_lib))
        super().run()


class SdistWithProtos(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        shutil.copytree(protos_root() / "placecheck", Path(base_dir) / "proto" / "placecheck")
        license_file = CHECKOUT / "LICENSE"
        if license_file.exists() and not (Path(base_dir) / "LICENSE").exists():
            shutil.copy(license_file, base_dir)


setup(
    version=version(),
    packages=["placecheck"],  # placecheck.v1 is generated into the build (BuildPyWithStubs)
    cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProtos},
)
