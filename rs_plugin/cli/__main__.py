"""``python -m rs_plugin.cli``: the ``rs-plugin`` command."""

import sys

from rs_plugin.cli import main

sys.exit(main())
