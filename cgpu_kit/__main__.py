"""``python -m cgpu_kit``: the same as the ``cgpu-kit`` command."""

import sys

from .cli import main

sys.exit(main())
