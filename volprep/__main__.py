"""``python -m volprep``: the same as the ``volprep`` console script."""

import sys

from volprep.cli import main

sys.exit(main())
