"""``python -m bokehme_core``: see :mod:`bokehme_core.cli`."""

import sys

from .cli import main

sys.exit(main())
