"""The Lambda code asset, built locally without Docker: ``functions/`` + ``spotyolo/`` + the
unpacked manylinux wheels of every third-party package the handlers import that the Lambda
runtime does not provide.

What each source provides on Lambda:
- the python3.14 runtime: boto3 and its dependencies (``RUNTIME_PROVIDES``);
- this asset: our code and ``LAMBDA_REQUIREMENTS``: Powertools (with its parser and tracer
  extras: pydantic, pydantic-core, aws-xray-sdk, wrapt, ...) and PyYAML. No Lambda layer: the
  public Powertools layers (and their SSM parameters) exist in about 30 regions, a bundled
  Powertools deploys in every one.

Wheels come from a cache folder, filled once by ``pip download`` (PyPI; ``make venv`` does it
with ``python -m cdk.lambda_bundle``, so later synths and test runs are offline) and reused by
every later synth; ``-c lambda_wheels=DIR`` points at a folder of wheels instead and never
touches the network (air-gapped synth). Two of the wheels are compiled (pydantic-core, and
the optional speedups of PyYAML and wrapt), so they must be the CPython 3.14 manylinux x86_64
builds, never the build installed in the venv. The built asset is content-addressed under
``build/lambda/<hash>``: an unchanged tree is not copied again, and the asset hash CDK computes
changes exactly when code or wheels change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

REPO_ROOT = Path(__file__).resolve().parent.parent
#: the Lambda runtime these wheels are for (cdk/functions_construct.py uses the same)
PYTHON_VERSION = "3.14"
PLATFORM = "manylinux2014_x86_64"
#: third-party packages of the Lambda code that the runtime lacks: the closure of
#: ``aws-lambda-powertools[parser,tracer]``, ``pydantic`` and ``PyYAML`` less ``RUNTIME_PROVIDES``
#: (a test derives it from the installed metadata and keeps the versions equal to the venv's)
LAMBDA_REQUIREMENTS = (
    "aws-lambda-powertools==3.37.0",
    "aws-xray-sdk==2.15.0",
    "wrapt==2.5.2",
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types==0.8.0",
    "typing-extensions==4.16.0",
    "typing-inspection==0.4.5",
    "PyYAML==6.0.4",
)
#: what every python3.x Lambda runtime holds already: boto3 and its dependencies
RUNTIME_PROVIDES = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
#: an unzipped function (code and layers) may be at most 250 MB
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
SOURCE_PACKAGES = ("functions", "spotyolo")
_SKIP_NAMES = {"__pycache__", ".mypy_cache", ".pytest_cache"}
_KEEP_BUILDS = 3


class BundleError(RuntimeError):
    """The asset cannot be built; the message says how to fix it."""


def default_cache_dir() -> Path:
    base = os.environ.get("SPOTYOLO_WHEEL_CACHE") or Path.home() / ".cache" / "spotyolo" / "lambda-wheels"
    return Path(base) / f"cp{PYTHON_VERSION.replace('.', '')}-{PLATFORM}"


def _wheel_fits(path: Path, python_version: str = PYTHON_VERSION) -> bool:
    """True if the wheel installs on CPython ``python_version`` / manylinux x86_64."""
    cp = f"cp{python_version.replace('.', '')}"
    _, _, _, tags = parse_wheel_filename(path.name)
    for tag in tags:
        platform_ok = tag.platform == "any" or (
            tag.platform.startswith("manylinux") and tag.platform.endswith("_x86_64")
        )
        abi_ok = tag.abi in ("none", "abi3", cp)
        interp_ok = tag.interpreter in ("py3", cp) or (
            tag.abi == "abi3"
            and tag.interpreter.startswith("cp3")
            and int(tag.interpreter[3:] or 0) <= int(cp[3:])
        )
        if platform_ok and abi_ok and interp_ok:
            return True
    return False


def find_wheels(
    folder: Path, requirements: tuple[str, ...] = LAMBDA_REQUIREMENTS, python_version: str = PYTHON_VERSION
) -> dict[str, Path | None]:
    """Requirement -> a fitting wheel in ``folder`` (None where there is none)."""
    found: dict[str, Path | None] = {}
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    for req in requirements:
        name, _, version = req.partition("==")
        found[req] = None
        for wheel in wheels:
            w_name, w_version, _, _ = parse_wheel_filename(wheel.name)
            if (
                canonicalize_name(w_name) == canonicalize_name(name)
                and str(w_version) == version
                and _wheel_fits(wheel, python_version)
            ):
                found[req] = wheel
                break
    return found


def download_wheels(dest: Path, requirements: tuple[str, ...] = LAMBDA_REQUIREMENTS) -> None:
    """``pip download`` manylinux wheels for the Lambda runtime into ``dest`` (needs PyPI)."""
    dest.mkdir(parents=True, exist_ok=True)
    cp = PYTHON_VERSION.replace(".", "")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--no-deps",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--abi",
        f"cp{cp}",
        "--platform",
        PLATFORM,
        "-d",
        str(dest),
        *requirements,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BundleError(
            f"could not download the Lambda's wheels ({', '.join(requirements)}) from PyPI:\n"
            f"{proc.stderr.strip()[-2000:]}\nFix: run the synth once with network access (the wheels "
            f"are cached in {dest}), or download them elsewhere with\n  "
            f"{' '.join(cmd[2 : -len(requirements) - 2])}"
            f" -d DIR {' '.join(requirements)}\nand pass -c lambda_wheels=DIR"
        )


def resolve_wheels(wheels_dir: str | Path | None = None) -> list[Path]:
    """The wheels to unpack: from ``wheels_dir`` (never downloads) or from the cache."""
    if wheels_dir is not None:
        folder = Path(wheels_dir).expanduser().resolve()
        found = find_wheels(folder)
        missing = [req for req, wheel in found.items() if wheel is None]
        if missing:
            raise BundleError(
                f"context lambda_wheels={wheels_dir}: no wheel for {', '.join(missing)} that fits "
                f"CPython {PYTHON_VERSION} on {PLATFORM} in {folder}. Fix: pip download --only-binary=:all: "
                f"--no-deps --python-version {PYTHON_VERSION} --platform {PLATFORM} -d {folder} "
                f"{' '.join(missing)}"
            )
        return [w for w in found.values() if w is not None]
    cache = default_cache_dir()
    found = find_wheels(cache)
    if any(w is None for w in found.values()):
        with tempfile.TemporaryDirectory(prefix="wheels-", dir=_ensure(cache.parent)) as tmp:
            download_wheels(Path(tmp), tuple(r for r, w in found.items() if w is None))
            cache.mkdir(parents=True, exist_ok=True)
            for wheel in Path(tmp).glob("*.whl"):
                os.replace(wheel, cache / wheel.name)
        found = find_wheels(cache)
        if any(w is None for w in found.values()):
            raise BundleError(f"pip downloaded no fitting wheel for {found} into {cache}")
    return [w for w in found.values() if w is not None]


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _source_files(repo_root: Path) -> list[Path]:
    files: list[Path] = []
    for package in SOURCE_PACKAGES:
        for path in sorted((repo_root / package).rglob("*")):
            rel = path.relative_to(repo_root)
            if path.is_file() and not _SKIP_NAMES.intersection(rel.parts) and path.suffix != ".pyc":
                files.append(path)
    return files


def build_asset(
    wheels: list[Path],
    repo_root: Path = REPO_ROOT,
    out_root: Path | None = None,
    python_version: str = PYTHON_VERSION,
) -> Path:
    """Build (or reuse) the asset folder for this code + these wheels and return its path
    (``python_version`` only names the build: the tests build one for the interpreter they
    import it with)."""
    out_root = out_root or repo_root / "build" / "lambda"
    sources = _source_files(repo_root)
    digest = hashlib.sha256(f"{python_version}/{PLATFORM}".encode())
    for path in sources:
        digest.update(str(path.relative_to(repo_root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for wheel in sorted(wheels):
        digest.update(wheel.name.encode() + b"\0" + hashlib.sha256(wheel.read_bytes()).digest())
    target = out_root / digest.hexdigest()[:20]
    if target.is_dir():
        return target
    _ensure(out_root)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out_root))
    try:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(tmp)
        for path in sources:
            dest = tmp / path.relative_to(repo_root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        size = tree_bytes(tmp)
        if size > MAX_UNZIPPED_BYTES:
            raise BundleError(
                f"the Lambda asset would be {size / 2**20:.0f} MB unzipped; Lambda allows 250 MB. "
                "Fix: drop a requirement from LAMBDA_REQUIREMENTS in cdk/lambda_bundle.py"
            )
        try:
            os.rename(tmp, target)
        except OSError:  # another synth built the same tree at the same time
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune(out_root, keep=target)
    return target


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _prune(out_root: Path, keep: Path) -> None:
    """Keep the newest few builds (an older one may still be in use by a running synth)."""
    builds = sorted(
        (p for p in out_root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in builds[_KEEP_BUILDS:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def lambda_asset(wheels_dir: str | Path | None = None, repo_root: Path = REPO_ROOT) -> Path:
    """The folder to give ``lambda.Code.from_asset``."""
    return build_asset(resolve_wheels(wheels_dir), repo_root=repo_root)


if __name__ == "__main__":  # `python -m cdk.lambda_bundle`: fill the wheel cache (make venv does)
    print(f"Lambda wheels: {resolve_wheels()[0].parent}")
