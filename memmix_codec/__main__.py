"""``python -m memmix_codec``: see `memmix_codec.cli`."""

import sys

from .cli import main

sys.exit(main())
