"""Why a flow stopped: shared by the integrators and the discrete optimizers."""

from __future__ import annotations

import enum


class FlowStatus(enum.IntEnum):
    """Why a flow stopped (or that it has not)."""

    RUNNING = 0
    REACHED_T_END = 1
    LOSS_BELOW = 2
    GRAD_NORM_BELOW = 3
    THETA_NORM_ABOVE = 4
    NONFINITE = -1
    STEP_UNDERFLOW = -2
    MAX_STEPS = -3

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @property
    def failed(self) -> bool:
        return self.value < 0


_MESSAGES = {
    FlowStatus.RUNNING: "still running (the solve was interrupted or sliced); resume it",
    FlowStatus.REACHED_T_END: "reached t_end",
    FlowStatus.LOSS_BELOW: "event: loss fell to loss_below (reached the optimal level)",
    FlowStatus.GRAD_NORM_BELOW: "event: gradient norm fell to grad_norm_below (at a critical point)",
    FlowStatus.THETA_NORM_ABOVE: "event: parameter norm rose to theta_norm_above (diverging)",
    FlowStatus.NONFINITE: "failed: non-finite loss, gradient or parameters at every step size tried",
    FlowStatus.STEP_UNDERFLOW: "failed: step size fell below 10 ulp of t",
    FlowStatus.MAX_STEPS: "failed: max_steps attempted steps exceeded",
}
