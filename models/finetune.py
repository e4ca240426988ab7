"""Strategy "finetune": an MLP trained by Adam on whatever it sees, with no protection at all.

It is the lower bound every continual-learning result is compared with: each observed batch gets
``epochs_per_batch`` Adam steps of cross-entropy on that batch, and old classes are forgotten as
new ones arrive. ``sleep`` does nothing. The network (``models.network``) is
``input -> hidden -> hidden -> num_classes`` with ReLU, the same for every network strategy.

The optimiser state travels with the weights (``models.torch_state``), so a reloaded learner
continues training exactly as the original would have.
"""

from __future__ import annotations

from models.network import NetworkLearner
from models.registry import register


@register
class Finetune(NetworkLearner):
    name = "finetune"
    settings = ("class", "task", "domain")
