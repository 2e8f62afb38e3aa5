"""Real peers for the integration tests: Prometheus and Alertmanager from Debian's packages.

``make peers`` installs them (``prometheus``, ``prometheus-alertmanager``); a
test that needs one is skipped with the reason when the binary is missing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

BINARY = "prometheus-alertmanager"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPeer:
    """A peer binary on 127.0.0.1 with a ``/-/ready`` endpoint (both Prometheus and Alertmanager have it)."""

    name = "peer"

    def __init__(self, binary: str, args: list[str], workdir: Path, port: int) -> None:
        self.port = port
        self.log = workdir / f"{self.name}.log"
        self.proc = subprocess.Popen(
            [binary, *args, f"--web.listen-address=127.0.0.1:{port}"],
            stdout=open(self.log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Alertmanager(LocalPeer):
    """A real Alertmanager with a null receiver (we only read its API back)."""

    name = "alertmanager"

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which(BINARY)
        if binary is None:
            pytest.skip(f"{BINARY} not installed (apt-get install prometheus-alertmanager)")
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = workdir / "alertmanager.yml"
        cfg.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
        args = [f"--config.file={cfg}", f"--storage.path={workdir / 'data'}", "--cluster.listen-address="]
        super().__init__(binary, args, workdir, _free_port())

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as r:
            return list(json.loads(r.read()))
