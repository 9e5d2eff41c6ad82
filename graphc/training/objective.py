"""What a model is trained for. By default: class logits under cross-entropy against the
labels. A model class that says `objective = "reconstruction"` (graphc.models.Autoencoder)
is trained to reproduce its input under mean squared error: its target is the batch itself.
graphc train, bench and inspect all ask here."""

from __future__ import annotations

CLASSIFICATION = "classification"
RECONSTRUCTION = "reconstruction"
OBJECTIVES = (CLASSIFICATION, RECONSTRUCTION)


def objective_of(model) -> str:
    """The objective a model (instance or class) declares."""
    value = getattr(model, "objective", CLASSIFICATION)
    if value not in OBJECTIVES:
        name = model.__name__ if isinstance(model, type) else type(model).__name__
        raise ValueError(
            f"{name}.objective is {value!r}; it must be one of {', '.join(map(repr, OBJECTIVES))}"
        )
    return value


def criterion(nn, objective: str, reduction: str = "mean"):
    """The loss module of `objective` in the framework `nn` (graphc.nn or torch.nn): called as
    loss(output, target), where the target is the labels or, to reconstruct, the inputs."""
    if objective == RECONSTRUCTION:
        return nn.MSELoss(reduction=reduction)
    return nn.CrossEntropyLoss(reduction=reduction)


def describe(objective: str) -> str:
    if objective == RECONSTRUCTION:
        return "mean squared error of the reconstructed input"
    return "cross-entropy of the class logits"
