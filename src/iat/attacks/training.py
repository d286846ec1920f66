"""The inner attack of adversarial training (`--attack`): the paper's PGD, or a single-step one.

`pgd` is PGD with `--step-size` and `--attack-steps` (the paper's PGD-7). `fgsm-rs` and `n-fgsm` are
one forward-backward each (FGSMRS, NFGSM) and take their step from eps, as their papers do (1.25 eps
and eps): `--step-size` and `--attack-steps` describe PGD and do not apply to them.
"""

from __future__ import annotations

from torch import nn

from iat.attacks.core import Attack
from iat.attacks.fgsm_rs import FGSMRS
from iat.attacks.nfgsm import NFGSM
from iat.attacks.pgd import PGD
from iat.attacks.trades import TRADESPGD, NoiseStartPGD
from iat.errors import UsageError

TRAINING_ATTACKS = ("pgd", "fgsm-rs", "n-fgsm")
SINGLE_STEP = ("fgsm-rs", "n-fgsm")
# What the method's PGD climbs and where it starts: 'ce' (the paper's: cross-entropy, uniform start), 'kl'
# (TRADES: KL to the clean prediction) and 'ce-noise' (MART: cross-entropy), the last two from x + 0.001 N(0,1).
INNER_OBJECTIVES = ("ce", "kl", "ce-noise")


def training_attack(name: str, model: nn.Module, *, eps: float, step_size: float, steps: int, bn_mode: str = "eval",
                    autocast: bool = False, objective: str = "ce") -> Attack:
    """The inner attack `--attack NAME` of adversarial training on `model`; `objective` (INNER_OBJECTIVES) is the
    method's: TRADES and MART run their own PGD, so they take `--attack pgd` only.

    Training's attack runs in fp32 outside the update's autocast unless `autocast` (`--attack-precision amp`),
    and without the input-range check: training images are in [0,1] by construction (loaded, then cropped
    with zero padding and flipped), and the check would read a value back from the device every step.
    """
    settings = dict(bn_mode=bn_mode, autocast=autocast, check_range=False)
    if objective != "ce":
        if name != "pgd":
            raise UsageError(f"--attack {name}: this method's inner attack is its own PGD; use --attack pgd")
        kind = TRADESPGD if objective == "kl" else NoiseStartPGD
        return kind(model, eps, step_size, steps, **settings)
    if name == "fgsm-rs":
        return FGSMRS(model, eps, **settings)
    if name == "n-fgsm":
        return NFGSM(model, eps, **settings)
    if name == "pgd":
        return PGD(model, eps, step_size, steps, **settings)
    raise UsageError(f"--attack {name!r}: choose one of {', '.join(TRAINING_ATTACKS)}")
