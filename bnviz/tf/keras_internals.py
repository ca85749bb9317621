"""The three Keras internals bnviz needs where Keras 3 has no public API, each behind one function.

Nothing else in bnviz touches a private Keras name (tests/test_framework_seams.py checks the source);
the same file tests each function on small models, so a Keras upgrade that changes one fails there
with the function's name instead of deep inside a probe.
"""

from __future__ import annotations

from collections.abc import Callable

import keras


def all_layers(model: keras.Layer) -> list[keras.Layer]:
    """Every layer inside `model`, in construction order, depth first: nested models, a wrapper's
    inner layer and a custom layer's sublayers included (`model.layers` stops at the first level).
    Not Keras's `_flatten_layers`: it lists a nested model's layers in reverse (deque.extendleft)."""
    found: dict[int, keras.Layer] = {}

    def visit(layer: keras.Layer) -> None:
        for sublayer in layer._layers:
            if id(sublayer) not in found:
                found[id(sublayer)] = sublayer
                visit(sublayer)

    visit(model)
    return list(found.values())


def has_graph(model: keras.Model) -> bool:
    """Is `model` a Functional graph that `run_through_graph` can walk (not a subclassed model)?"""
    return callable(getattr(model, "_run_through_graph", None))


def run_through_graph(model: keras.Model, inputs: object, call: Callable) -> object:
    """`model`'s outputs on `inputs`, each layer invoked as `call(layer, *args, **kwargs)`: Keras's own
    graph walk, the one `keras.models.clone_model` uses for its `call_function`."""
    return model._run_through_graph(inputs, call_fn=call)


def first_parent(layer: keras.Layer) -> object | None:
    """The operation (a layer, or an `Input`'s) whose output `layer` consumed at its first call; None
    for a layer never called on a symbolic tensor."""
    for node in getattr(layer, "_inbound_nodes", [])[:1]:
        for parent in node.parent_nodes[:1]:
            return parent.operation
    return None
