"""A NaN loss during in-step accumulation: an error in the user's words.

When the training loss (or its gradient) becomes NaN or infinite, the in-step sums of
``TrainStepSaliency`` become NaN, and the next event would rank channels on NaN. The error
names the signal as the user gave it ("taylor", not ``mask_delta|abs,mean_n|none``) and
points at what usually causes it: the data or the learning rate.
"""

from __future__ import annotations

import numpy as np

from tfchannelprune.errors import NonFiniteInputError
from tfchannelprune.saliency import signals as signals_lib


def user_name(signal) -> str:
    """The preset name of ``signal`` ("taylor") when it has one, else its id."""
    names = [name for name, sid in signals_lib.PRESETS.items() if sid == signal.id]
    return names[0] if names else signal.id


def check_step_sums(signal, sums: dict, num_examples: int) -> None:
    """Raise ``NonFiniteInputError`` when the in-step sums of ``signal`` hold NaN/inf.

    Args:
        signal: the ``Signal`` being accumulated.
        sums: {group: array of running sums}.
        num_examples: examples accumulated since the last event.
    """
    bad = {g: int(np.sum(~np.isfinite(v))) for g, v in sums.items()}
    bad = {g: n for g, n in bad.items() if n}
    if not bad:
        return
    name = user_name(signal)
    raise NonFiniteInputError(
        f"The {name!r} criterion accumulated in the training steps is NaN or infinite in "
        f"{len(bad)} group(s) ({sorted(bad)[:4]}) over the last {num_examples} examples: the "
        "training loss or its gradients became NaN/inf. Check the training data for NaN/inf "
        "values and labels that fit the loss, and lower the learning rate (or clip "
        f"gradients). Received: signal={name!r}, non-finite values={sum(bad.values())}"
    )
