"""Streamlit glue that the pages share: settings, the model list, the cached predictor, the current
photo. Only page scripts live in pages/ (each one an st.Page in app.py)."""
