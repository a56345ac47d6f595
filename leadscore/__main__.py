"""``python -m leadscore``: the ``leadscore`` command."""

import sys

from leadscore.cli import main

sys.exit(main())
