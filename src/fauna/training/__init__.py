"""Training one backbone, by responsibility (the `fauna train` step is steps/train.py).

    data.py          the split dataset as training sees it: shards, counts, augmentation
    recipe.py        what to train when: phases, learning rates, schedules, per start
    callbacks.py     the Keras callbacks (imports Keras: import this module lazily)
    checkpoints.py   per-epoch checkpoints (model + state as one unit, local and S3)
    loop.py          the training loop: start or resume, one fit per phase
    deliverables.py  the model folder: model.keras, export/, history, train_info.json

Only callbacks.py and loop.py import Keras at module level; the others import it
inside the functions that need it, so `fauna --help` stays free of TensorFlow.
"""

from fauna.errors import FaunaError


class TrainError(FaunaError):
    """Training cannot start or continue (one clear line)."""


class Diverged(TrainError):
    """Training produced a non-finite loss, weight or output: its checkpoints are worthless."""
