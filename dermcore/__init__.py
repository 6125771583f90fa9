"""dermcore: decode, corrupt, preprocess, predict and explain skin-lesion photos.

Pure Python + torch; never imports streamlit. Data flows one way:
image bytes -> load_image -> corrupt -> Predictor.explain -> plain results for a page to draw.
"""

__version__ = "0.1.0"
