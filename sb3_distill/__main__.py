"""``python -m sb3_distill``: the ``sb3-distill`` command line."""

import sys

from sb3_distill.cli import main

sys.exit(main())
