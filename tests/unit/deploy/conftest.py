"""Rendering the Kustomize overlays offline, for the manifest tests.

``kubectl kustomize`` when kubectl is on PATH (it embeds Kustomize v5); else a
``kustomize`` binary built once from the Go module proxy into
``~/.cache/driftline/kustomize/<version>/`` (``go install``, no cluster and no
other download needed); else the rendering tests skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

KUSTOMIZE_VERSION = "v5.5.0"
KUSTOMIZE_CACHE = Path.home() / ".cache" / "driftline" / "kustomize" / KUSTOMIZE_VERSION


def _kubectl_kustomize() -> list[str] | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    probe = subprocess.run([kubectl, "kustomize", "--help"], capture_output=True, timeout=60)
    return [kubectl, "kustomize"] if probe.returncode == 0 else None


def _go_kustomize() -> tuple[list[str] | None, str]:
    binary = KUSTOMIZE_CACHE / "kustomize"
    if binary.is_file():
        return [str(binary), "build"], ""
    go = shutil.which("go")
    if go is None:
        return None, "neither kubectl nor go is on PATH (kustomize cannot be had offline)"
    KUSTOMIZE_CACHE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(KUSTOMIZE_CACHE), "GOFLAGS": "-p=1"}  # one compile job: 2 cores shared
    done = subprocess.run([go, "install", f"sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}"],
                          env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 or not binary.is_file():
        return None, f"go install kustomize {KUSTOMIZE_VERSION} failed: {(done.stdout + done.stderr)[-500:]}"
    return [str(binary), "build"], ""


@pytest.fixture(scope="session")
def kustomize() -> list[str]:
    """The command that renders a kustomization directory to stdout."""
    cmd = _kubectl_kustomize()
    if cmd is not None:
        return cmd
    cmd, why = _go_kustomize()
    if cmd is None:
        pytest.skip(f"cannot render the overlays: {why}")
    return cmd


@pytest.fixture(scope="session")
def render(kustomize: list[str]) -> Callable[[Path], list[dict[str, Any]]]:
    """Render a kustomization directory into its resources (cached per directory for the session)."""
    cache: dict[Path, list[dict[str, Any]]] = {}

    def run(path: Path) -> list[dict[str, Any]]:
        if path not in cache:
            done = subprocess.run([*kustomize, str(path)], capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"rendering {path} failed:\n{done.stderr}"
            cache[path] = [d for d in yaml.safe_load_all(done.stdout) if d]
        return cache[path]

    return run
