"""``python -m spotyolo.trainer``: run one training attempt and exit with its outcome's code.

The process ends with ``os._exit`` once its output is flushed: every upload and the answer
to Step Functions are synchronous and done by then, and a normal interpreter teardown after
torch and Ultralytics takes 3-5 s, which would delay the instance's shutdown and the local
engine's view of the exit for nothing.
"""

import logging
import os
import sys

from spotyolo.trainer.main import main

code = main()
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
