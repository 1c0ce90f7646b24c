"""``python -m tac_core …``: see :mod:`tac_core.cli`."""
import sys

from .cli import main

sys.exit(main())
