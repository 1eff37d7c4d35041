"""Run the orch CLI from a checkout: ``python3 orchestrator/ops.py status``.

Python puts this file's folder first on ``sys.path``, where our own modules
would shadow same-named top-level ones. Swap it for the repository root so
``orchestrator`` imports as a package, exactly as the installed ``orch`` does.
"""

import sys
from pathlib import Path

if not __package__:
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from orchestrator.__main__ import main  # noqa: E402

if __name__ == "__main__":
    main()
