"""``python -m hub.cli``: the ``fraudhub`` command line."""

import sys

from hub.cli import main

sys.exit(main())
