"""Each term bnviz uses, defined once: the dashboard shows this list in a glossary expander, and
tooltips quote it, so "moving", "batch" and "population" statistics mean one thing everywhere."""

from __future__ import annotations

GLOSSARY: dict[str, str] = {
    "moving statistics": "The per-channel mean and variance a BatchNormalization layer keeps for test time (Keras: moving_mean / "
    "moving_variance; PyTorch calls them running statistics). Each training step updates them: "
    "moving = m·moving + (1 − m)·batch. They start at 0 and 1.",
    "running statistics": "PyTorch's name for the moving statistics.",
    "batch statistics": "The mean and variance of the current batch. BN normalises with them in training mode (fit).",
    "population statistics": "The mean and variance of a layer's input over many training images, weights frozen: what the "
    "moving statistics should have converged to.",
    "inference mode": "BN normalises with its moving statistics: what evaluate and predict use.",
    "training mode": "BN normalises each batch with its own batch statistics: what fit uses.",
    "train (fit)": "The accuracy fit reports: training mode, a running mean over the last epoch.",
    "train (evaluate)": "evaluate on the same training images: inference mode, after training.",
    "probe batch": "A fixed batch of validation images the probe runs through the model in both modes at chosen steps, to record "
    "accuracy, activations and each BN layer's statistics during training.",
    "PreciseBN": "Recompute every BN layer's statistics as population statistics over training batches, weights frozen; no retraining.",
    "mᵗ": "The weight the starting values 0 and 1 still carry in the moving statistics after t steps at momentum m.",
    "mean gap": "|moving mean − population mean| / population standard deviation, median over a layer's channels. 0 is right.",
    "scale error": "√((moving variance + ε) / (input variance + ε)), median over a layer's channels. 1 is right; above 1 inference "
    "divides by a standard deviation that many times too large.",
}


def glossary_markdown() -> str:
    """The glossary as a Markdown list."""
    return "\n".join(f"- **{term}**: {text}" for term, text in GLOSSARY.items())
