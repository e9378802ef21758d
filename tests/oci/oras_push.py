"""Pushes one file with oras-py (PyPI `oras`): `oras_push.py <registry> <target> <file> [token]`.

With a token, logs in first (the token as the password). Prints the manifest PUT's status code.
"""
import os
import sys

import oras.client

registry, target, path = sys.argv[1:4]
client = oras.client.OrasClient(hostname=registry, insecure=True)
if len(sys.argv) > 4:
    client.login(username="ci", password=sys.argv[4], hostname=registry)
# oras names the layer by the path as given: push from the file's directory so that the name is the file's.
os.chdir(os.path.dirname(os.path.abspath(path)))
response = client.push(target=target, files=[os.path.basename(path)])
print(response.status_code)
sys.exit(0 if response.status_code == 201 else 1)
