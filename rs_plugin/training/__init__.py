"""Training base classifiers for randomized smoothing: objectives and the loop that runs them.

What lives here: the :class:`~rs_plugin.training.objective.Objective` interface (the loss one
optimiser step minimises) and the helpers objectives share
(:mod:`~rs_plugin.training.objective`), the training loop with its seeded shuffling and noise
(:mod:`~rs_plugin.training.loop`), and one module per objective: noise augmentation (Cohen et al.
2019, :mod:`~rs_plugin.training.augmentation`), SmoothAdv (Salman et al. 2019,
:mod:`~rs_plugin.training.smoothadv`), MACER (Zhai et al. 2020,
:mod:`~rs_plugin.training.macer`), consistency regularisation (Jeong & Shin 2020,
:mod:`~rs_plugin.training.consistency`), SmoothMix (Jeong et al. 2021,
:mod:`~rs_plugin.training.smoothmix`) and CAT-RS (Jeong, Kim & Shin 2023,
:mod:`~rs_plugin.training.catrs`); the objectives of a denoiser in front of a frozen classifier
(Salman et al. 2020, :mod:`~rs_plugin.training.denoising`); the papers' optimiser and schedule
(:mod:`~rs_plugin.training.recipe`) and checkpointed, resumable training
(:mod:`~rs_plugin.training.resumable`). Every objective draws its noise through a smoothing's
``perturb``, so each works with any input-space smoothing (Gaussian, Laplace, uniform, ...).

May import: :mod:`rs_plugin.smoothings`, :mod:`rs_plugin.certification` and
:mod:`rs_plugin._validation`; never the audit, the command line, the data package or an adapter.
"""

from rs_plugin.training.augmentation import NoiseAugmentation
from rs_plugin.training.catrs import CATRS
from rs_plugin.training.consistency import Consistency
from rs_plugin.training.denoising import DenoiserObjective
from rs_plugin.training.loop import TrainingGenerators, train
from rs_plugin.training.macer import MACER
from rs_plugin.training.objective import Objective
from rs_plugin.training.recipe import SGDRecipe, published_recipe
from rs_plugin.training.smoothadv import SmoothAdv
from rs_plugin.training.smoothmix import SmoothMix

__all__ = [
    "CATRS",
    "MACER",
    "Consistency",
    "DenoiserObjective",
    "NoiseAugmentation",
    "Objective",
    "SGDRecipe",
    "SmoothAdv",
    "SmoothMix",
    "TrainingGenerators",
    "published_recipe",
    "train",
]
