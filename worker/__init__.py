import os

# onnxruntime (1.29+) sends usage telemetry from its native code and writes a device id under
# ~/.cache/Microsoft unless this is set before it initialises. Every entry point imports this
# package first, so no linewatch process phones home.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
