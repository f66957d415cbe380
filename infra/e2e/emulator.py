"""ministack, the local AWS emulator the stack is deployed on, as a child process.

It listens on 127.0.0.1 only, on a free port. These settings matter beyond the port:

- ``AWS_ENDPOINT_URL``: ministack passes its own environment to the ``provided.al2023``
  bootstrap processes it starts and sets ``AWS_ENDPOINT_URL`` for them only from its own
  ``AWS_ENDPOINT_URL`` (or ``LOCALSTACK_HOSTNAME``). Set to ministack's address, the
  functions' AWS SDK calls come back to it, on 127.0.0.1.
- ``SSL_CERT_FILE``: the HTTP API's JWT authorizer fetches the issuer's discovery document
  and keys over HTTPS with Python's default trust store; the bundle given here includes
  the local identity provider's certificate.
- ``AUTH=true``: requests are authorized with IAM, and each function runs with the
  credentials of its own execution role, so the template's policies are enforced.
- ``PERSIST_STATE=0``, ``S3_PERSIST=0``: nothing outlives the process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

ACCOUNT = "000000000000"
REGION = "us-east-1"
STARTUP_TIMEOUT_SECONDS = 60


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ministack:
    """A ministack process on 127.0.0.1 and boto3 clients pointed at it."""

    def __init__(self, workdir: Path, ca_bundle: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "ministack.log"
        self.pid_path = workdir / "ministack.pid"
        self._ca_bundle = ca_bundle
        self._process: subprocess.Popen | None = None
        self._log = None
        self._session = boto3.session.Session(
            aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION
        )

    def start(self) -> None:
        """Starts ministack and waits until its health endpoint answers."""
        env = {
            key: value
            for key, value in os.environ.items()
            # The caller's AWS settings are not the emulator's.
            if not key.startswith("AWS_")
        }
        env.update(
            {
                "GATEWAY_PORT": str(self.port),
                "BIND_HOST": "127.0.0.1",
                "MINISTACK_HOST": "127.0.0.1",
                "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_DEFAULT_REGION": REGION,
                "SSL_CERT_FILE": str(self._ca_bundle),
                "PERSIST_STATE": "0",
                "S3_PERSIST": "0",
                "LOG_LEVEL": "INFO",
                # Not needed, and it would listen on a fixed port (8883).
                "IOT_MTLS_ENABLED": "0",
                "AUTH": "true",
            }
        )
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "ministack"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group: stopping it also stops the function processes it started.
            start_new_session=True,
        )
        self.pid_path.write_text(str(self._process.pid))
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"ministack exited with {self._process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/_ministack/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"ministack did not answer within {STARTUP_TIMEOUT_SECONDS}s; see {self.log_path}")

    def stop(self) -> None:
        """Stops ministack and every process it started (SIGTERM, then SIGKILL)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        # Function processes left in the group after ministack itself ended.
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process = None
        self.pid_path.unlink(missing_ok=True)
        if self._log is not None:
            self._log.close()

    def client(self, service: str):
        """A boto3 client for ``service`` on this ministack."""
        return self._session.client(
            service,
            endpoint_url=self.endpoint,
            config=Config(retries={"max_attempts": 2, "mode": "standard"}, read_timeout=120),
        )

    def log_tail(self, lines: int = 80) -> str:
        """The last lines ministack wrote."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
