"""One settings model for every linewatch process.

Values come from (highest first): keyword arguments, `LINEWATCH_*` environment
variables (nested with `__`, e.g. `LINEWATCH_KAFKA__BOOTSTRAP_SERVERS`), the YAML
file named by `LINEWATCH_CONFIG`, then the defaults below.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from common.settings_base import Section as _Section
from common.settings_base import env_then_yaml
from common.settings_dashboard import DashboardSettings
from common.settings_kafka import KafkaSettings


class RedisSettings(_Section):
    # The URL may embed a password (redis://:secret@host:6379/0), so it is a secret too.
    url: SecretStr | None = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="redis:// or rediss:// URL of the embedding cache (secret: may hold a password); empty disables Redis",
    )
    password: SecretStr | None = Field(None, description="Redis password if not in the URL (secret)")
    username: str | None = Field(None, description="Redis ACL user if not in the URL (None: the default user)")
    signing_key: SecretStr | None = Field(
        None, description="HMAC-SHA256 key signing every array kept in Redis; unsigned values are refused (secret)"
    )
    allow_unsigned: bool = Field(
        True,
        description="false: a worker or `references` command with Redis but no signing_key refuses to start (compose sets false; true only on a laptop)",
    )
    embedding_ttl_s: int = Field(7 * 86400, ge=0, description="prompt embeddings expire after this long (0: never)")
    max_embedding_bytes: int = Field(
        65_536, ge=1024, description="a cached prompt embedding larger than this is refused"
    )
    max_bank_mb: float = Field(1024.0, gt=0.0, description="a reference bank larger than this is not loaded")
    max_pool_frame_mb: float = Field(64.0, gt=0.0, description="a pool frame larger than this is not read back")
    key_prefix: str = Field("linewatch", description="prefix of every Redis key")
    socket_timeout_s: float = Field(0.5, description="Redis socket timeout; a slow Redis must not stall inference")
    retry_after_s: float = Field(5.0, description="how long to stay on local compute after Redis failed")
    # The LRU is the Inspector's only in-process cache: one object's prompts (about 950) must fit,
    # or every batch misses it.
    lru_entries: int = Field(
        4096, ge=1024, description="in-process LRU entries in front of Redis (about 950 per object; 10 MB per 4096)"
    )

    @field_validator("password", "username", "signing_key", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:  # compose passes an unset `${VAR:-}` as ""
        return None if isinstance(value, str) and not value.strip() else value

    def signing_key_bytes(self) -> bytes | None:
        return self.signing_key.get_secret_value().encode() if self.signing_key is not None else None


# Model profiles (worker/inspection/models/registry.py builds them); every CLI offers these names.
ModelProfile = Literal["default", "base", "tiny", "demo"]
PROFILE_NAMES: tuple[str, ...] = get_args(ModelProfile)
RANDOM_WEIGHT_PROFILES: tuple[str, ...] = ("base", "tiny", "demo")


class ModelSettings(_Section):
    profile: ModelProfile = Field(
        "default",
        description="default (real weights), base (real architectures, random weights), tiny (tests), demo (tiny with a finer CLIP patch grid, for make demo)",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1 ...")
    models_dir: Path = Field(Path("models"), description="folder holding clip/, clipseg/, sam/, isnet/")
    clip_model: str = Field("ViT-B-16-plus-240", description="open_clip model name")
    clip_pretrained: str = Field("laion400m_e32", description="open_clip pretrained tag, or a checkpoint file")
    clipseg_model: str = Field("CIDAS/clipseg-rd64-refined", description="local folder or hub id in the HF cache")
    sam_type: Literal["vit_b", "vit_l", "vit_h"] = Field("vit_b", description="SAM backbone: vit_b, vit_l or vit_h")
    sam_checkpoint: Path | None = Field(None, description="defaults to models/sam/sam_<type>.pth")
    isnet_path: Path | None = Field(None, description="defaults to <models_dir>/isnet/isnet.onnx")
    foreground: Literal["sam+isnet", "isnet", "none"] = Field(
        "sam+isnet", description="sam+isnet, isnet (no SAM) or none (whole frame)"
    )
    tile_size: int = Field(352, description="minimum tile side in pixels (CLIPSeg input)")
    tile_temperature: float | None = Field(
        None,
        gt=0.0,
        description="scale of the tile score's two-way softmax; None = the CLIP checkpoint's own logit scale (100 for CLIP); anomalib's WinCLIP uses 1/0.07 = 14.29",
    )
    pins_file: Path | None = Field(
        None,
        description="the pins of real weights (revision and sha256 per file) that `models pull` and every worker check; None = the pins.json shipped with linewatch (worker/inspection/models/pins.json)",
    )
    sam_base_url: str = Field(
        "https://dl.fbaipublicfiles.com/segment_anything/",
        description="where `models pull` fetches SAM checkpoints (Meta's release; a mirror of the same files)",
    )
    few_shot_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="fusion of the few-shot (reference bank / pool) map and score with the zero-shot ones: 0 = zero-shot only, 1 = few-shot only",
    )
    few_shot_layers: tuple[int, ...] = Field(
        (-7, -4, -1),
        min_length=1,
        description="CLIP vision blocks whose patch tokens form the few-shot features (negative = from the end, clamped to the depth)",
    )
    reference_max_patches: int = Field(
        20_000, ge=1, description="patches a reference bank keeps; beyond, greedy coreset subsampling (PatchCore)"
    )
    pool_frames: int = Field(
        0, ge=0, description="rolling normal pool: the last M frames per scope scored against (0 = off)"
    )
    pool_fraction: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="pool aggregate: mean of the smallest fraction of a patch's per-frame distances (MuSc)",
    )
    pool_min_frames: int = Field(4, ge=1, description="pool frames needed before the pool scores a frame")
    pool_refresh_s: float = Field(
        5.0, gt=0.0, description="how often a worker reads the scope's pool back from Redis (shared by all workers)"
    )
    sam_points: Literal["salient", "grid"] = Field(
        "salient",
        description="salient: prompt SAM only at grid points inside the dilated IS-Net mask (the only ones whose masks can be kept); grid: the full 32x32 grid (the paper's way)",
    )
    sam_point_margin_px: int = Field(
        16, ge=0, description="sam_points=salient: how far outside the IS-Net mask grid points are still prompted"
    )
    instances: Literal["objects", "components"] = Field(
        "objects",
        description="objects: SAM whole-object masks, or IS-Net blobs split at their necks, each an instance with its own tile; components: the paper's connected components of the foreground",
    )
    tiles: Literal["instance", "shared"] = Field(
        "instance",
        description="instance: one tile per instance (the paper's way); shared: small instances that fit together in one tile_size window share one tile, each still seen at its own tile's scale (fewer CLIP and CLIPSeg passes)",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = Field(
        "auto",
        description="auto (the default): bf16 on CUDA devices that support it, on CPUs with AMX-BF16, and on CPUs with AVX512-BF16 where a bf16 matmul timed at start-up runs at least 1.5x fp32 (0.57x on one such CPU, 4.5x on another), else fp32; fp32 (the reference, scores as the paper computes them); bf16; fp16 (CUDA only). CLIP, CLIPSeg and SAM run on copies of their weights converted to it, IS-Net too when models.isnet_runtime puts it on torch; int8 (CPU only, never chosen by auto): dynamic int8 Linear layers in CLIP's image tower, CLIPSeg's vision trunk and SAM's image encoder and mask decoder (2-3.6x faster than fp32 on a VNNI CPU; scores move more than in bf16, so check them on the line's frames with `bench` first), IS-Net as models.isnet_precision says",
    )
    sam_image_size: int = Field(
        1024,
        description="input side of SAM's image encoder, a multiple of 64 from 128 to 1024; 1024 = the checkpoint's own (the paper's way); 640 sees a 640x480 frame at its own resolution with 2.6x fewer encoder tokens, at a mask quality not measured with real weights (docs/explanation/pipeline.md); a side above a model's own runs at its own (tiny: 256)",
    )

    @field_validator("sam_image_size")
    @classmethod
    def _sam_side(cls, side: int) -> int:
        if side % 64 or not 128 <= side <= 1024:
            raise ValueError(
                f"models.sam_image_size must be a multiple of 64 from 128 to 1024 (1024 = the checkpoint's own), got {side}"
            )
        return side

    isnet_runtime: Literal["auto", "onnxruntime", "torch"] = Field(
        "auto",
        description="what runs IS-Net's ONNX graph: onnxruntime (fp32, CPU or onnxruntime-gpu), torch (the graph converted by onnx2torch: on the worker's device, in models.precision, channels-last); auto: torch on CUDA or when the precision is bf16/fp16, else onnxruntime (faster in fp32 on a CPU)",
    )
    isnet_precision: Literal["float", "int8"] = Field(
        "float",
        description="float: the IS-Net file as shipped; int8: its int8 graph <isnet file>.int8.onnx, made from the line's frames by `linewatch-worker models quantize-isnet`, on onnxruntime's CPU provider (3x faster per pass on a VNNI CPU, mask IoU against float 0.994 at worst on synthetic belt frames)",
    )

    @model_validator(mode="after")
    def _int8_runs_on_onnxruntime(self) -> ModelSettings:
        if self.isnet_precision == "int8" and self.isnet_runtime == "torch":
            raise ValueError(
                "models.isnet_precision=int8 runs on onnxruntime; set models.isnet_runtime to auto or onnxruntime"
            )
        return self


class WorkerSettings(_Section):
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="identifier written into results and dead letters (default host-pid)",
    )
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="image score at or above which a frame is anomalous")
    threshold_version: str = Field("static-0.5", description="label of the threshold in force, written into results")
    pixel_threshold: float = Field(0.5, ge=0.0, le=1.0, description="anomaly map level for the defect mask")
    batch_max_frames: int = Field(8, ge=1, description="largest micro-batch handed to the Inspector")
    batch_max_wait_ms: int = Field(50, ge=0, description="how long to wait to fill a micro-batch")
    queue_max_frames: int = Field(64, ge=1, description="pause partitions when this many frames wait")
    max_frame_age_s: float | None = Field(None, description="older frames get verdict 'skipped'")
    max_frame_bytes: int = Field(20_000_000, description="frames larger than this are dead-lettered before decoding")
    max_frame_pixels: int = Field(
        40_000_000, description="frames with more pixels (by header) are dead-lettered before decoding"
    )
    max_header_bytes: int = Field(
        65_536, ge=1024, description="frames whose headers together are larger are dead-lettered (headers trimmed)"
    )
    known_scopes_only: bool = Field(
        False,
        description="dead-letter frames whose camera and object have no control record in force (no scope applies): unknown camera ids or object names cost no models, pools or metric series",
    )
    heatmap_side: int = Field(128, ge=0, description="0 disables the heatmap in results")
    health_port: int | None = Field(None, description="port of /healthz /readyz /metrics; None disables")
    commit_interval_ms: int = Field(1000, ge=0, description="how often acknowledged offsets are committed")
    shutdown_timeout_s: float = Field(20.0, ge=0.0, description="on SIGTERM, time to finish polled frames")
    warm_up_passes: int = Field(
        1,
        ge=0,
        description="synthetic frames inspected before joining the consumer group (first-pass costs are paid before any partition is taken); 0 skips",
    )
    keep_freed_memory: bool = Field(
        True,
        description="glibc: keep memory freed by one frame for the next instead of faulting in fresh pages (mallopt: no mmap'd allocations, 1 GiB trim threshold); CLIPSeg's decoder MLP ran 1.8x faster on a 2-core VM; the process keeps its peak memory",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="times a message's record may fail to be built before it is dead-lettered (stage 'publish'); each failure before that reads its micro-batch again",
    )
    inference_timeout_s: float | None = Field(
        600.0,
        gt=0.0,
        description="a batch in the Inspector for longer (a wedged device) makes the worker unready; it leaves the group, so others take its partitions, and exits non-zero; None disables",
    )


class TelemetrySettings(_Section):
    service_name: str = Field("linewatch", description="OpenTelemetry service.name")
    # Exporters themselves follow the standard OTEL_* variables (OTEL_TRACES_EXPORTER ...).
    enabled: bool = Field(True, description="turn tracing/metrics off entirely")


class AlarmSettings(_Section):
    """The alarm service (`linewatch-worker alarms`): results -> rules -> alarm events -> MES webhook."""

    rules_file: Path | None = Field(None, description="alarm rules YAML; `--rules` on the command line wins")
    group_id: str = Field("linewatch-alarms", description="consumer group reading the results topic")
    webhook_group_id: str = Field("linewatch-alarms-mes", description="consumer group delivering alarms to the MES")
    dlq_topic: str = Field("linewatch.alarms.dlq", description="alarm events the MES refused, with the reason")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "latest", description="where a brand-new alarms group starts on the results topic (no replay of history)"
    )
    dedup_entries: int = Field(100_000, ge=1, description="frame ids remembered to drop redelivered results")
    max_streams: int = Field(10_000, ge=1, description="per-camera streams kept per rule kind; least recent go")
    tick_interval_s: float = Field(0.5, gt=0.0, description="how often silence rules are evaluated")
    health_port: int | None = Field(None, description="port of /healthz /readyz /metrics; None disables")
    commit_interval_ms: int = Field(1000, ge=0, description="how often acknowledged offsets are committed")
    shutdown_timeout_s: float = Field(20.0, ge=0.0, description="on SIGTERM, time to finish polled frames")
    webhook_url: str | None = Field(None, description="MES endpoint (http/https); None = publish to Kafka only")
    webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key for X-Linewatch-Signature")
    webhook_timeout_s: float = Field(5.0, gt=0.0, description="HTTP timeout of one MES webhook attempt")
    webhook_max_attempts: int = Field(8, ge=1, description="attempts before an event is dead-lettered")
    webhook_backoff_base_s: float = Field(
        0.5, ge=0.0, description="first retry delay (doubles each attempt, with jitter)"
    )
    webhook_backoff_max_s: float = Field(30.0, ge=0.0, description="longest retry delay")
    webhook_ca_file: Path | None = Field(None, description="CA bundle for an https MES with a private CA")

    @field_validator("webhook_url", "webhook_secret", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        # compose passes `${MES_WEBHOOK_URL:-}` through as an empty string
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _signed(self) -> AlarmSettings:
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError("webhook_url is set but webhook_secret is not: MES deliveries are always signed")
        return self


class LinewatchSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LINEWATCH_", env_nested_delimiter="__", frozen=True, extra="forbid", hide_input_in_errors=True
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    models: ModelSettings = ModelSettings()
    worker: WorkerSettings = WorkerSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    alarms: AlarmSettings = AlarmSettings()
    dashboard: DashboardSettings = DashboardSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_then_yaml(settings_cls, init_settings, env_settings, "LINEWATCH_CONFIG")

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked, for the start-up log."""
        return self.model_dump(mode="json")  # SecretStr dumps as '**********'


def settings_table() -> str:
    """Markdown table of every setting: environment variable, default, meaning (docs/reference/settings.md has a fuller one)."""
    rows = ["| environment variable | default | meaning |", "|---|---|---|"]
    for section_name, section_field in LinewatchSettings.model_fields.items():
        section = section_field.annotation
        for name, field in section.model_fields.items():
            if field.default_factory is not None:
                default = "(computed)"
            elif isinstance(field.default, SecretStr):
                default = "(secret)"
            else:
                default = "" if field.default is None else str(field.default)
            env = f"LINEWATCH_{section_name.upper()}__{name.upper()}"
            rows.append(f"| `{env}` | `{default}` | {field.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
