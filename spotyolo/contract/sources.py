"""Where the deployment sources live in a checkout: the ASL file and the Lambda entry points.

Both the CDK app and the local engine deploy these very files; they are not part of the
installed package (``pip install .`` installs ``spotyolo`` only), so both need the checkout.
"""

from __future__ import annotations

from pathlib import Path

#: the repository root (this file is spotyolo/contract/sources.py)
REPO_ROOT = Path(__file__).resolve().parents[2]
#: one thin entry point per Lambda: functions/<name>.py with ``handler``
FUNCTIONS_DIR = REPO_ROOT / "functions"
#: the state machine definition and the example state documents
STEPFUNCTIONS_DIR = REPO_ROOT / "stepfunctions"
ASL_PATH = STEPFUNCTIONS_DIR / "training_pipeline.asl.json"
EXAMPLES_DIR = STEPFUNCTIONS_DIR / "examples"


class CheckoutMissing(RuntimeError):
    """The deployment sources are not next to the package (an installed wheel, not a checkout)."""


def require(path: Path) -> Path:
    """``path`` if it exists, else a clear error saying a checkout is needed."""
    if not path.exists():
        raise CheckoutMissing(
            f"{path} is missing: the local engine and the CDK app deploy the repository's functions/ and "
            "stepfunctions/, so run them from a clone of the spotyolo repository"
        )
    return path
