"""The paper's reward as EasyR1 loads it: ``worker.reward.reward_function=<this file>:compute_score``.

EasyR1 executes a reward file by its path (``importlib.util.spec_from_file_location``), outside
any package, so a file with relative imports (``rewards.py``) fails there with "attempted
relative import with no known parent package". This entry point imports absolutely; the project
must be installed in EasyR1's environment without its dependencies (``pip install --no-deps -e
/path/to/v2lo-workbook``: the reward needs only the standard library, and the project's pinned
transformers 5 would replace EasyR1's transformers<5).
"""

from v2lo_utils.rewards import compute_score

__all__ = ["compute_score"]
