"""``python -m spotyolo.cli``: the same as the ``spotyolo`` command."""

import sys

from spotyolo.cli import main

sys.exit(main())
