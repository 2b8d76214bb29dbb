"""`python -m asyncchat`: the same command line as the `asyncchat` script."""

import sys

from asyncchat.cli import main

sys.exit(main())
