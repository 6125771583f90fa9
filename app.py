"""Derm Robustness Lab: entry point. Page config, navigation and the shared sidebar; no ML here.

    streamlit run app.py

DERM_WEIGHTS_DIR names the weights folder (default weights/ beside this file); DERM_SAMPLES_DIR a
folder of sample photos for the Explore page's gallery.
"""

import streamlit as st

from ui import common

# The tab icon ships with the app: a material-icon page_icon makes every page load ask a font
# server for it, and nothing may leave the machine.
st.set_page_config(
    page_title="Derm Robustness Lab",
    page_icon=str(common.APP_DIR / "ui" / "icon.png"),
    layout="wide",
    initial_sidebar_state="expanded",
)

# url_paths differ from the file names on purpose. While a folder named pages/ sits beside this
# script, the first run of a fresh server process (and every AppTest run) starts in Streamlit's
# legacy multipage mode: a URL matching a file name there would run that file alone, without this
# script and its sidebar. (A deep link as that very first request still shows a "Page not found"
# notice above the right page; only renaming the folder removes that.)
PAGES = [
    st.Page(
        "pages/explore.py",
        title="Explore",
        icon=":material/image_search:",
        default=True,
        url_path="explore-photo",
    ),
    st.Page(
        "pages/robustness.py",
        title="Robustness curve",
        icon=":material/show_chart:",
        url_path="robustness-curve",
    ),
    st.Page(
        "pages/results.py",
        title="Results",
        icon=":material/analytics:",
        url_path="evaluation-results",
    ),
    st.Page(
        "pages/teaching.py",
        title="Teaching",
        icon=":material/co_present:",
        url_path="teaching-mode",
    ),
    st.Page(
        "pages/your_photos.py",
        title="Your photos",
        icon=":material/folder_zip:",
        url_path="your-photos",
    ),
    st.Page(
        "pages/model_data.py",
        title="Model & data",
        icon=":material/description:",
        url_path="model-and-data",
    ),
]


def sidebar_model_picker() -> None:
    """One picker for every page: each model by its plain name, with one line on what it is."""
    models = common.available_models()
    entries = [entry for entry in models if entry.card is not None]
    unreadable = [entry for entry in models if entry.card is None]
    if not entries:
        st.sidebar.warning(f"No model checkpoints in {common.weights_dir()}.")
    else:
        by_path = {entry.path: entry for entry in entries}
        if st.session_state.get(common.MODEL_KEY) not in by_path:
            st.session_state.pop(common.MODEL_KEY, None)
        st.sidebar.selectbox(
            "Model",
            list(by_path),
            format_func=lambda path: by_path[path].label,
            key=common.MODEL_KEY,
            help="Every checkpoint in the weights folder. Below it: what the model is, and the "
            "scores on its card: the in-distribution test split, and SD-198, the external set "
            "(the honest test).",
        )
        chosen = by_path[st.session_state[common.MODEL_KEY]]
        summary = common.metrics_summary(chosen.card)
        blurb = common.model_blurb(chosen.card)
        st.sidebar.caption(
            (f"{blurb}  \n" if blurb else "")
            + f"`{chosen.card.arch}` · {summary or 'no test scores on its card'}"
        )
    for entry in unreadable:
        st.sidebar.warning(entry.error)
    st.sidebar.info(common.NOTICE, icon=":material/school:")


page = st.navigation(PAGES)
sidebar_model_picker()
page.run()
