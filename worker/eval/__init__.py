"""Offline evaluation of the Inspector on MVTec AD, VisA or a plain folder (the paper's table).

Modules: `datasets` (lazy readers), `metrics` (exact image and streaming pixel
metrics), `runner` (the loop), `overlays` (worst-case heatmaps), `report`
(table, JSON, CSV), `cli` (the `eval` subcommand), `bench_memory`.
"""
