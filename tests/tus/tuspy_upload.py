"""Uploads a file with tuspy (PyPI), the tus client nobody here wrote, retrying from the server's offset after a
broken connection. Driven by tests/tus.rs: tuspy_upload.py ENDPOINT FILE METADATA_JSON [TOKEN]. Prints the upload
URL, then `done`; exits non-zero when the upload fails."""

import json
import sys

from tusclient import client

endpoint, path, metadata = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
headers = {"Authorization": f"Bearer {sys.argv[4]}"} if len(sys.argv) > 4 else {}
tus = client.TusClient(endpoint, headers=headers)
# One PATCH for the whole file, so that a cut lands inside it; each retry asks the server for its offset (HEAD)
# and sends the rest from there.
uploader = tus.uploader(path, chunk_size=1 << 30, metadata=metadata, retries=20, retry_delay=0)
uploader.upload()
print(uploader.url, flush=True)
print("done", flush=True)
