"""``python -m dashrl`` is the ``dashrl`` command."""

import sys

from dashrl.cli import main

sys.exit(main())
