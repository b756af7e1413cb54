"""Builds tiny Python distributions for snapsync's package-mirror tests, with the standard library only
(zipfile, tarfile), so it works offline and is independent of the Rust code that reads them.

Usage: make_dists.py OUT_DIR SPEC...; a SPEC is KIND:NAME:VERSION[:REQUIRES_PYTHON[:PAD]] with KIND one
of wheel, sdist (.tar.gz with PKG-INFO), sdist-zip (.zip with PKG-INFO), sdist-bare (an old-style .tar.gz
with no metadata at all, named NAME-VERSION.tar.gz). A wheel with PAD carries that many more bytes (a
stored member of seeded random bytes), for tests that need a file large enough to be caught half-sent.
Prints each file's name, one a line.
"""
import io
import os
import random
import re
import sys
import tarfile
import time
import zipfile

FIXED = (2020, 1, 1, 0, 0, 0)


def metadata(name, version, requires_python):
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: tiny test package {name}",
        "Author: Snap Sync",
        "Author-email: test@example.com",
        "License: MIT",
        "Classifier: Programming Language :: Python :: 3",
        "Classifier: License :: OSI Approved :: MIT License",
        "Requires-Dist: attrs>=1.0",
        "Project-URL: Home, https://example.com/" + name,
        "Description-Content-Type: text/markdown",
    ]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    return "\n".join(lines) + f"\n\n# {name}\n\nA tiny package, version {version}.\n"


def wheel(out, name, version, requires_python, pad=0):
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    filename = f"{dist}-{version}-py3-none-any.whl"
    files = {
        f"{dist}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": metadata(name, version, requires_python),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: snapsync-testkit\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if pad:
        files[f"{dist}/pad.bin"] = random.Random(f"{name}-{version}").randbytes(pad)
    files[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(os.path.join(out, filename), "w", zipfile.ZIP_DEFLATED) as z:
        for path, text in files.items():
            kind = zipfile.ZIP_STORED if path.endswith("/pad.bin") else zipfile.ZIP_DEFLATED
            z.writestr(zipfile.ZipInfo(path, FIXED), text, compress_type=kind)
    return filename


def sdist_files(name, version, requires_python, with_metadata):
    files = {"setup.py": f"from setuptools import setup\nsetup(name={name!r}, version={version!r})\n"}
    if with_metadata:
        files["PKG-INFO"] = metadata(name, version, requires_python)
    return files


def sdist(out, name, version, requires_python, kind):
    if kind == "sdist-bare":
        base = f"{name}-{version}"
    else:
        base = f"{re.sub(r'[-_.]+', '_', name)}-{version}"
    files = sdist_files(name, version, requires_python, kind != "sdist-bare")
    if kind == "sdist-zip":
        filename = base + ".zip"
        with zipfile.ZipFile(os.path.join(out, filename), "w", zipfile.ZIP_DEFLATED) as z:
            for path, text in files.items():
                z.writestr(zipfile.ZipInfo(f"{base}/{path}", FIXED), text)
        return filename
    filename = base + ".tar.gz"
    with tarfile.open(os.path.join(out, filename), "w:gz") as t:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{path}")
            info.size = len(data)
            info.mtime = time.mktime(FIXED + (0, 0, -1))
            t.addfile(info, io.BytesIO(data))
    return filename


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for spec in sys.argv[2:]:
        parts = spec.split(":", 4)
        kind, name, version = parts[0], parts[1], parts[2]
        requires_python = parts[3] if len(parts) > 3 else ""
        pad = int(parts[4]) if len(parts) > 4 and parts[4] else 0
        if kind == "wheel":
            print(wheel(out, name, version, requires_python, pad))
        elif kind in ("sdist", "sdist-zip", "sdist-bare"):
            print(sdist(out, name, version, requires_python, kind))
        else:
            sys.exit(f"unknown kind {kind!r} in {spec!r}")


main()
