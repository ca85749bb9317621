"""`python -m bench.screenshot [--out docs/diagnose.png] [--synthetic]`: the README's picture of the
Diagnose page. It trains the `bn` preset at momentum 0.99 (3 epochs on the embedded data, as
`bnviz train --preset bn` does: about a minute on 2 cores with TensorFlow's start) into a fresh
store, starts a real `streamlit run app.py` on it and screenshots the page's first screen in
Debian's Chromium (tests/browser.py). `--synthetic` writes a finished run straight into the store
instead, as tests/test_browser_first_screen.py does (seconds, made-up numbers)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.util import ROOT, quiet_tensorflow

WIDTH, HEIGHT = 1280, 900  # the first screen: verdict, big figures, symptom and cause charts


def real_run(home: Path) -> str:
    """The collapsed run of the README's story: the `bn` preset, m = 0.99, trained and evaluated."""
    quiet_tensorflow()
    from bnviz.presets import preset_config
    from bnviz.store import Store
    from bnviz.tf.train import execute_run

    store = Store(home)
    result = execute_run(store, store.create_run(preset_config("bn").with_momentum(0.99).replace(name="bn m=0.99")))
    assert result.status == "done", result.error
    return result.run_id


def synthetic_run(home: Path) -> str:
    from bnviz.store import Store
    from tests.test_diagnose_page import _finished

    return _finished(Store(home), "bn m=0.99")


def shoot(home: Path, run_id: str, out: Path) -> Path:
    from tests.browser import chromium, streamlit_server

    with streamlit_server(home) as (url, _), chromium() as browser:
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto(f"{url}/diagnose?run={run_id}")
        page.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for(timeout=120_000)
        page.locator('[data-testid="stAlert"]:has-text("Verdict")').first.wait_for(timeout=60_000)
        page.wait_for_timeout(2_000)  # the remaining charts finish drawing
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        page.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "diagnose.png")
    parser.add_argument("--synthetic", action="store_true", help="a run written straight into the store, no training")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bnviz-screenshot-") as tmp:
        home = Path(tmp)
        run_id = synthetic_run(home) if args.synthetic else real_run(home)
        path = shoot(home, run_id, args.out)
    print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
