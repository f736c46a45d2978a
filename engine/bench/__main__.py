"""``python -m hvx.bench``: the same as the ``hvx-bench`` command."""

import sys

from hvx.bench.cli import main

sys.exit(main())
