"""linewatch producer: frame sources, rate control and publishing to the frames topic."""

import os

# onnxruntime (1.29+) sends usage telemetry from its native code unless this is set before it
# initialises; every linewatch package sets it on import (see common/__init__.py).
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
