"""Phase IV stratification core: flag rules (data), their evaluation over columns, and subsets.

Pure functions over in-memory tables and arrays (no Ray, no BASE access) so the Phase IV pipeline,
the CLI and notebooks share one definition of every flag:

* :func:`load_rules` reads ``default_rules.yaml`` plus a user's overrides into :class:`Rules`;
* :func:`evaluate` computes every flag, its score and its evidence for a Phase II features table,
  with CLIP vectors, duplicate groups and Phase V evidence when they are given;
* :func:`parse_subset` turns ``"text_heavy and not (screenshot or dark)"`` into a row mask.
"""

from exoray.strata.evaluate import Evaluation, evaluate
from exoray.strata.expr import SubsetError, SubsetExpr, parse_subset
from exoray.strata.rules import FlagRule, Rules, RulesError, default_rules_text, load_rules

__all__ = [
    "Evaluation",
    "FlagRule",
    "Rules",
    "RulesError",
    "SubsetError",
    "SubsetExpr",
    "default_rules_text",
    "evaluate",
    "load_rules",
    "parse_subset",
]
