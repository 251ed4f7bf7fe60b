"""``python -m zephyr_arrow.cli``: the ``zephyr-arrow`` command."""

import sys

from zephyr_arrow.cli.main import main

sys.exit(main())
