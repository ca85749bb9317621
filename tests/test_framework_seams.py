"""The framework internals bnviz relies on, each pinned in one function: no private Keras or Streamlit
name anywhere else (read from the source), and each pinned function still works on this install, so
an upgrade that moves one fails here with its name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEAMS = {  # file → the functions allowed to touch framework internals
    "bnviz/tf/keras_internals.py": {"all_layers", "has_graph", "run_through_graph", "first_parent"},
    "pages/common.py": {"legacy_multipage_mode"},
}
INTERNAL_MODULES = ("keras.src", "tensorflow.python", "streamlit.runtime", "streamlit.web")
ATTRIBUTE_CALLS = ("getattr", "hasattr", "setattr", "delattr")


def private_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of each private attribute reached on another object (`x._y`, `getattr(x, "_y")`)
    and each import from a framework's internal modules; `self._y` and dunders are not private."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ATTRIBUTE_CALLS and len(node.args) > 1:
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and private(name.value):
                found.append((node.lineno, name.value))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
            found.extend((node.lineno, m) for m in modules if m.startswith(INTERNAL_MODULES))
    return found


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def seam_lines(tree: ast.AST, functions: set[str]) -> set[int]:
    """The lines of the pinned functions in a seam file."""
    return {
        line
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name in functions
        for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
    }


def product_files() -> list[Path]:
    return [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "bnviz").rglob("*.py"))]


def test_no_private_framework_name_outside_its_seam():
    outside = []
    for path in product_files():
        name = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(), name)
        allowed = seam_lines(tree, SEAMS.get(name, set()))
        outside += [f"{name}:{line} {attr}" for line, attr in private_names(tree) if line not in allowed]
    assert not outside, "framework internals outside bnviz/tf/keras_internals.py and pages/common.py:legacy_multipage_mode:\n" + "\n".join(outside)


def test_the_source_check_catches_internals():
    tree = ast.parse("import keras\nfrom streamlit.runtime.x import Y\nmodel._flatten_layers()\ngetattr(layer, '_inbound_nodes')\nself._ok\nx.__name__\n")
    assert sorted(name for _, name in private_names(tree)) == ["_flatten_layers", "_inbound_nodes", "streamlit.runtime.x"]


@pytest.fixture(scope="module")
def nested_model():
    """A Functional model with a Conv2D → BN, a nested Sequential holding a BN, and a BN inside TimeDistributed."""
    import keras
    from keras import layers

    inner_layers = [keras.Input((4, 4, 3)), layers.Conv2D(2, 3, padding="same", name="inner_conv"), layers.BatchNormalization(name="inner_bn")]
    inner = keras.Sequential(inner_layers, name="inner")
    x_in = keras.Input((4, 4, 3))
    x = layers.Conv2D(3, 3, padding="same", name="conv")(x_in)
    x = layers.BatchNormalization(name="outer_bn")(x)
    x = inner(x)
    x = layers.Reshape((4, 8))(x)
    x = layers.TimeDistributed(layers.BatchNormalization(name="timed_bn"))(x)
    return keras.Model(x_in, layers.Flatten()(x))


def test_keras_internals_all_layers_finds_every_nested_layer(nested_model):
    from bnviz.tf.keras_internals import all_layers

    names = [layer.name for layer in all_layers(nested_model)]
    assert {"conv", "outer_bn", "inner", "inner_bn", "timed_bn"} <= set(names), f"Keras changed Layer._flatten_layers: all_layers gave {names}"
    assert names.index("conv") < names.index("outer_bn") < names.index("inner") < names.index("inner_conv") < names.index("inner_bn"), (
        f"all_layers lost construction order (a nested model's layers reversed, as Keras's _flatten_layers does): {names}"
    )


def test_keras_internals_run_through_graph_calls_each_layer(nested_model):
    import keras
    import numpy as np

    from bnviz.tf.keras_internals import has_graph, run_through_graph

    assert has_graph(nested_model), "Keras changed Functional._run_through_graph: has_graph is False for a Functional model"
    called = []

    def call(layer, *args, **kwargs):
        called.append(layer.name)
        return layer(*args, **kwargs)

    x = np.ones((2, 4, 4, 3), "float32")
    out = run_through_graph(nested_model, keras.ops.convert_to_tensor(x), call)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(nested_model(x)), rtol=1e-5, atol=1e-5)
    assert called[:3] == ["conv", "outer_bn", "inner"], f"Keras changed Functional._run_through_graph: it called {called}"


def test_keras_internals_first_parent_names_the_feeding_layer(nested_model):
    from bnviz.tf.keras_internals import all_layers, first_parent

    parents = {layer.name: type(first_parent(layer)).__name__ for layer in all_layers(nested_model)}
    assert parents["outer_bn"] == "Conv2D", f"Keras changed Layer._inbound_nodes / Node.parent_nodes: first_parent gave {parents}"
    assert parents["conv"] == "InputLayer"


def test_streamlit_legacy_multipage_mode_is_still_readable():
    from pages.common import legacy_multipage_mode

    try:
        mode = legacy_multipage_mode()
    except (ImportError, AttributeError) as error:
        pytest.fail(f"Streamlit moved PagesManager.uses_pages_directory ({error}): adapt pages/common.py:legacy_multipage_mode")
    assert isinstance(mode, bool)
