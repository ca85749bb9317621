"""bnviz dashboard: `streamlit run app.py`.

A frame only: page config, the shared sidebar and the navigation. The pages live in pages/, their
shared glue in pages/common.py (see `common.leave_legacy_pages_mode` for why every page calls it).
Training runs in worker processes (bnviz.jobs); this process never imports TensorFlow. Run data goes
to $BNVIZ_HOME (default ./bnviz-runs).
"""

from __future__ import annotations

import streamlit as st

from pages import common


def sidebar() -> None:
    manager = common.manager()
    runs = manager.store.list_runs(status=list(common.ACTIVE))
    running = sum(r.status == "running" for r in runs)
    with st.sidebar:
        st.caption(f"Runs folder (BNVIZ_HOME): `{manager.store.home}`")
        st.caption(f"Workers (BNVIZ_MAX_WORKERS): {manager.max_workers} · {running} running · {len(runs) - running} queued")


def main() -> None:
    st.set_page_config(page_title="bnviz · BatchNorm collapse", page_icon="📉", layout="wide")
    page = st.navigation([
        st.Page(common.PAGE_FILES["train"], title="Train", icon=":material/model_training:", default=True),
        st.Page(common.PAGE_FILES["runs"], title="Runs", icon=":material/list:"),
        st.Page(common.PAGE_FILES["diagnose"], title="Diagnose", icon=":material/troubleshoot:"),
        st.Page(common.PAGE_FILES["compare"], title="Compare", icon=":material/compare:"),
        st.Page(common.PAGE_FILES["sweep"], title="Sweep", icon=":material/tune:"),
        st.Page(common.PAGE_FILES["story"], title="Story", icon=":material/school:"),
        st.Page(common.PAGE_FILES["export"], title="Export", icon=":material/download:"),
    ])
    sidebar()
    page.run()


main()
