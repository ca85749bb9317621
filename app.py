"""bnviz dashboard: `streamlit run app.py`.

A frame only: page config, the navigation and the shared sidebar (pages/common.py `frame`), then the
chosen page from pages/. Training runs in worker processes (bnviz.jobs); this process never imports
TensorFlow. Run data goes to $BNVIZ_HOME (default ./bnviz-runs).
"""

from __future__ import annotations

from pages import common


def main() -> None:
    common.run_page(common.frame())


main()
