"""Pushes one file with oras-py (PyPI `oras`): `oras_push.py <registry> <target> <file> [token]`.

With a token, logs in first (the token as the password). With ORAS_CHUNK_SIZE set, uploads the file in chunks of
that many bytes (PATCH requests) instead of whole. Prints the manifest PUT's status code.
"""
import os
import sys

import oras.client

registry, target, path = sys.argv[1:4]
client = oras.client.OrasClient(hostname=registry, insecure=True)
if len(sys.argv) > 4:
    client.login(username="ci", password=sys.argv[4], hostname=registry)
chunk_size = int(os.environ.get("ORAS_CHUNK_SIZE", "0"))
options = {"do_chunked": True, "chunk_size": chunk_size} if chunk_size else {}
# oras names the layer by the path as given: push from the file's directory so that the name is the file's.
os.chdir(os.path.dirname(os.path.abspath(path)))
response = client.push(target=target, files=[os.path.basename(path)], **options)
print(response.status_code)
sys.exit(0 if response.status_code == 201 else 1)
