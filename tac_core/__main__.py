"""``python -m tac_core …``: see :mod:`tac_core.run.cli`."""
import sys

from .run.cli import main

sys.exit(main())
