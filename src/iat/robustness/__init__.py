"""Is the robustness real? Eps and step sweeps (Tables 6, 7), transfer attacks (Table 5), an audit.

    from iat.robustness import sweep_eps, sweep_steps, transfer_matrix, audit
    result = sweep_eps(["runs/pgd", "runs/iat-mixup"], [1/255, 2/255, 10/255])   # sweep-eps.json
    print(sweep_table(result))

Every number is an error in % on the test split under white-box L-inf PGD unless said otherwise,
counted per example as the worst case over the attacks run (iat.attacks.worstcase).
"""

from __future__ import annotations

from iat.attacks import STEP_RULE, default_step
from iat.robustness.masking import audit, audit_model, audit_table, write_audit
from iat.robustness.sweep import sweep_eps, sweep_plot, sweep_steps, sweep_table, write_sweep
from iat.robustness.transfer import TRANSFER_JSON, transfer_matrix, transfer_table

__all__ = ["STEP_RULE", "TRANSFER_JSON", "audit", "audit_model", "audit_table", "default_step", "sweep_eps",
           "sweep_plot", "sweep_steps", "sweep_table", "transfer_matrix", "transfer_table", "write_audit",
           "write_sweep"]
