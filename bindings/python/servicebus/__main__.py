"""``python -m servicebus``: the same as the ``servicebus`` command (servicebus.cli)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
