"""The operator dashboard: a live line view (frames, heatmaps, alarms) and one-click feedback in a browser.

Imports only `common/`, `worker.inspection.overlays` (cv2) and this package: no torch.
"""
