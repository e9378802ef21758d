"""Pulls an artifact with oras-py (PyPI `oras`): `oras_pull.py <registry> <target> <outdir> [token]`.

With a token, logs in first (the token as the password), as `oras login` does. Prints the pulled files, one a line.
"""
import sys

import oras.client

registry, target, outdir = sys.argv[1:4]
client = oras.client.OrasClient(hostname=registry, insecure=True)
if len(sys.argv) > 4:
    print(client.login(username="ci", password=sys.argv[4], hostname=registry), file=sys.stderr)
for path in client.pull(target=target, outdir=outdir):
    print(path)
