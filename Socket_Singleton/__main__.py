"""``python -m Socket_Singleton``: see ``_cli``."""

import sys

from ._cli import main

sys.exit(main())
