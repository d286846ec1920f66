"""An attack's budget as one value: radius, step size, steps and restarts cannot be swapped by position."""

from __future__ import annotations

from dataclasses import dataclass, replace

from iat.errors import UsageError
from iat.units import parse_eps

STEP_RULE = "eps/4"  # the default PGD step for a given eps: 2/255 at 8/255, the paper's ratio


def default_step(eps: float) -> float:
    """The step size used at `eps` when none is given (STEP_RULE)."""
    return eps / 4


# Each restart is a whole PGD run on the examples still standing: a billion of them on a robust model never
# ends. Published evaluations use 1 to 10 restarts; a thousand is far past any that gains an error point.
MAX_RESTARTS = 1000


@dataclass(frozen=True)
class AttackBudget:
    """An L-inf attack on images in [0,1]: `AttackBudget(eps=8/255, step_size=2/255, steps=20)`.

    The one place a library caller's eps and step size are checked (with `iat.units.parse_eps`, as
    the command line checks them); a value outside [0, 1] raises UsageError (a ValueError).
    """

    eps: float  # L-inf radius, e.g. 8/255
    step_size: float  # signed-gradient step, e.g. 2/255; FGSM's is eps
    steps: int = 1  # gradient steps per run
    restarts: int = 1  # random starts; each attacks only the examples the ones before did not fool

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", parse_eps(self.eps, "eps"))
        object.__setattr__(self, "step_size", parse_eps(self.step_size, "step size"))
        for name, value in (("steps", self.steps), ("restarts", self.restarts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be an integer >= 1, got {value!r}")
        if self.restarts > MAX_RESTARTS:
            raise UsageError(f"restarts {self.restarts} is above {MAX_RESTARTS:,}, the most an evaluation allows")

    @classmethod
    def fgsm(cls, eps: float) -> AttackBudget:
        """One step of size eps (from the clean point: no random start)."""
        return cls(eps, eps, 1)

    @classmethod
    def at(cls, eps: float, step_size: float | None = None, steps: int = 1, restarts: int = 1) -> AttackBudget:
        """The budget at `eps`, with the default step (STEP_RULE) when `step_size` is None."""
        return cls(eps, default_step(eps) if step_size is None else step_size, steps, restarts)

    def with_steps(self, steps: int) -> AttackBudget:
        return replace(self, steps=steps)
