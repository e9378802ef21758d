"""Rebuilds the files of tests/data/inference-server from a clone of Modular-ML-inference/inference-server.

Usage: python3 make_bundles.py /path/to/inference-server

Each file is what the inference server downloads from the repository and unpacks into its local_cache
(inference_application/code/utils.py): a zip of the real files it then loads. Entries are stored uncompressed, in
order, with a fixed date, so the same clone always gives the same bytes (and sha256).
"""

import json
import os
import shutil
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))


def bundle(target, members):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as z:
        for name, path in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with open(path, "rb") as f:
                z.writestr(info, f.read())


def main(clone):
    with open(os.path.join(HERE, "components.json")) as f:
        components = json.load(f)["components"]
    for c in components:
        target = os.path.join(HERE, c["file"])
        sources = c.get("from", [])
        if c.get("verbatim"):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(clone, sources[0]), target)
        elif sources:
            bundle(target, [(os.path.basename(s), os.path.join(clone, s)) for s in sources])
        else:
            # A stand-in: the source repository has no such file.
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as z:
                info = zipfile.ZipInfo("STAND-IN.txt", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                z.writestr(info, c["stand_in"])
    for use_case in ("fall_detection", "scratch_detection"):
        for name in ("setup", "model", "preprocessing_pipeline", "postprocessing_pipeline"):
            source = os.path.join(clone, "use_case_configurations", use_case, name + ".json")
            target = os.path.join(HERE, use_case, name + ".json")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(source, target)
    shutil.copyfile(os.path.join(clone, "LICENSE"), os.path.join(HERE, "LICENSE"))


if __name__ == "__main__":
    main(sys.argv[1])
