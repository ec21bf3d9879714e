"""The audit's default attacks and budget levels (plain values: the command line reads them
without importing torch)."""

__all__ = ["ADDITIVE_ATTACKS", "BUDGETS", "SEMANTIC_ATTACKS"]

ADDITIVE_ATTACKS = ("pgd", "autoattack", "deepfool", "cw_l2")
SEMANTIC_ATTACKS = ("semantic_grid", "semantic_random")
# Global budget levels, as fractions of the largest certified radius.
BUDGETS = (0.25, 0.5, 1.0, 1.5, 2.0)
