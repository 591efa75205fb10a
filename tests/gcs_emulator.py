"""Run gcp-storage-emulator (from the package index) with the object headers real GCS sends and tensorstore
reads: ``x-goog-generation`` / ``x-goog-metageneration`` on downloads (orbax's OCDBT checkpoints compare
generations), and ``ifGenerationMatch`` honoured on uploads. Usage: python gcs_emulator.py PORT BUCKET."""

import sys
from http import HTTPStatus

from gcp_storage_emulator.handlers import objects


def _with_generation(download):
    def handler(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except Exception:  # noqa: BLE001 -- a missing object: download already answered 404
            return
        response["x-goog-generation"] = obj["generation"]
        response["x-goog-metageneration"] = obj["metageneration"]
    return handler


def _precondition(insert):
    def handler(request, response, storage, *args, **kwargs):
        wanted = request.query.get("ifGenerationMatch", [None])[0]
        name = request.query.get("name", [None])[0]
        if wanted is not None and name is not None:
            try:
                current = storage.get_file_obj(request.params["bucket_name"], name)["generation"]
            except Exception:  # noqa: BLE001 -- no such object
                current = "0"
            if str(current) != str(wanted):
                response.status = HTTPStatus.PRECONDITION_FAILED
                return
        insert(request, response, storage, *args, **kwargs)
    return handler


objects.download = _with_generation(objects.download)
objects.insert = _precondition(objects.insert)

if __name__ == "__main__":
    from gcp_storage_emulator.server import create_server  # after the patches: its routes bind the handlers

    port, bucket = int(sys.argv[1]), sys.argv[2]
    create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()
