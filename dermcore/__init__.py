"""dermcore: decode, corrupt, preprocess, predict and explain skin-lesion photos.

Pure Python + torch; never imports streamlit. Data flows one way:
image bytes -> load_image -> corrupt -> Predictor.explain -> plain results for a page to draw.
"""

import os

__version__ = "0.1.0"

# ONNX Runtime (the app's graph runtime, dermcore/graph_runtime.py) ships telemetry on Linux
# since 1.29: on import it writes a device identifier (.ses) to the temporary folder and looks
# up and posts to mobile.events.data.microsoft.com. The app must make no request to any other
# host, and the decision is latched when onnxruntime is first imported, so it is made here,
# before any dermcore module can import it (tests/test_privacy.py).
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
