"""A real local GCS for the tests: gcp-storage-emulator (from the package index) on 127.0.0.1, with the object
headers real GCS sends and tensorstore reads: ``x-goog-generation`` / ``x-goog-metageneration`` on downloads
(orbax's OCDBT checkpoints compare generations), and ``ifGenerationMatch`` honoured on uploads.

``python gcs_emulator.py PORT BUCKET`` runs it; :class:`Emulator` starts one and points gcsfs and tensorstore
(in this process and in the processes it starts) at it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from http import HTTPStatus
from pathlib import Path


class Emulator:
    """A running emulator with bucket :attr:`bucket`; :attr:`env` points gcsfs and tensorstore at it."""

    bucket = "jaxrec-test"

    def __init__(self, cache: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, __file__, str(port), self.bucket],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b/{self.bucket}", timeout=2)
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise RuntimeError("the GCS emulator did not start") from None
                time.sleep(0.2)
        self.env = {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url, "JAXREC_CACHE": str(cache),
                    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}  # the emulator has no control plane to probe

    def fs(self):
        """A gcsfs file system on the emulator (for the tests' own checks)."""
        import gcsfs

        return gcsfs.GCSFileSystem(token="anon", endpoint_url=self.url)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _serve(port: int, bucket: str) -> None:
    from gcp_storage_emulator.handlers import objects

    download, insert = objects.download, objects.insert

    def download_with_generation(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except Exception:  # noqa: BLE001 -- a missing object: download already answered 404
            return
        response["x-goog-generation"] = obj["generation"]
        response["x-goog-metageneration"] = obj["metageneration"]

    def insert_if_generation_matches(request, response, storage, *args, **kwargs):
        wanted, name = request.query.get("ifGenerationMatch", [None])[0], request.query.get("name", [None])[0]
        if wanted is not None and name is not None:
            try:
                current = storage.get_file_obj(request.params["bucket_name"], name)["generation"]
            except Exception:  # noqa: BLE001 -- no such object
                current = "0"
            if str(current) != str(wanted):
                response.status = HTTPStatus.PRECONDITION_FAILED
                return
        insert(request, response, storage, *args, **kwargs)

    objects.download, objects.insert = download_with_generation, insert_if_generation_matches
    from gcp_storage_emulator.server import create_server  # after the patches: its routes bind the handlers

    create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()


if __name__ == "__main__":
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    _serve(int(sys.argv[1]), sys.argv[2])
