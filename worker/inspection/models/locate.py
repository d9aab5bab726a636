"""Where the default profile finds each model on disk, under the names the weights are published with.

Pure path logic (no model is built, nothing touches the network), shared by the registry and
`models check`. Each finder returns the path it found, or None; `*_expected` says where to put it.
"""

from __future__ import annotations

from pathlib import Path

from common.settings import ModelSettings

# Hub repositories of open_clip models publish these two names; open_clip's own download uses them.
CLIP_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _release_name(model: str, tag: str) -> str | None:
    """The file name of open_clip's GitHub release checkpoint for (model, tag), if it has one."""
    from open_clip.pretrained import get_pretrained_cfg

    url = get_pretrained_cfg(model, tag).get("url") or ""
    return url.rsplit("/", 1)[-1] or None


def clip_candidates(settings: ModelSettings) -> list[Path]:
    """Files tried in order: published hub names, the release file, then <model>-<tag>.<ext>."""
    folder = settings.models_dir / "clip"
    names = list(CLIP_HUB_FILES)
    release = _release_name(settings.clip_model, settings.clip_pretrained)
    if release:
        names.append(release)
    names += [f"{settings.clip_model}-{settings.clip_pretrained}{ext}" for ext in (".safetensors", ".bin", ".pt")]
    return [folder / name for name in names]


def _clip_in_hub_cache(settings: ModelSettings) -> Path | None:
    """An open_clip tag already in the Hugging Face cache (looked up on disk only)."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import get_pretrained_cfg

    repo = (get_pretrained_cfg(settings.clip_model, settings.clip_pretrained).get("hf_hub") or "").strip("/")
    for name in CLIP_HUB_FILES if repo else ():
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return Path(found)
    return None


def find_clip(settings: ModelSettings) -> Path | None:
    if Path(settings.clip_pretrained).is_file():
        return Path(settings.clip_pretrained)
    for candidate in clip_candidates(settings):
        if candidate.is_file():
            return candidate
    return _clip_in_hub_cache(settings)


def find_clipseg(settings: ModelSettings) -> Path | None:
    """A folder with config.json: the setting as a path, <models_dir>/clipseg, or the hub cache."""
    if (Path(settings.clipseg_model) / "config.json").is_file():
        return Path(settings.clipseg_model)
    local = settings.models_dir / "clipseg"
    if (local / "config.json").is_file():
        return local
    try:  # a hub id already in the Hugging Face cache (local_files_only: no request)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(settings.clipseg_model, local_files_only=True))
    except Exception:
        return None


def find_sam(settings: ModelSettings) -> Path | None:
    if settings.sam_checkpoint is not None:
        return settings.sam_checkpoint if settings.sam_checkpoint.is_file() else None
    folder = settings.models_dir / "sam"
    candidates = sorted(folder.glob(f"sam_{settings.sam_type}*.pth")) + sorted(
        folder.glob(f"sam_{settings.sam_type}*.safetensors")
    )
    return candidates[0] if candidates else None


def clip_expected(settings: ModelSettings) -> str:
    return (
        f"{settings.models_dir}/clip/open_clip_pytorch_model.bin (or open_clip_model.safetensors, or "
        "LINEWATCH_MODELS__CLIP_PRETRAINED=/path/to/checkpoint)"
    )


def clipseg_expected(settings: ModelSettings) -> str:
    return (
        f"{settings.models_dir}/clipseg/ (config.json, pytorch_model.bin or model.safetensors, vocab.json, "
        "merges.txt, tokenizer and preprocessor configs), or LINEWATCH_MODELS__CLIPSEG_MODEL=/path/to/folder"
    )


def sam_expected(settings: ModelSettings) -> str:
    return (
        f"{settings.models_dir}/sam/sam_{settings.sam_type}_<md5>.pth (e.g. sam_vit_b_01ec64.pth), or "
        "LINEWATCH_MODELS__SAM_CHECKPOINT=/path (or LINEWATCH_MODELS__FOREGROUND=isnet to run without SAM)"
    )
