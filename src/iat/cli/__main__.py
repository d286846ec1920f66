"""`python -m iat.cli` runs the `iat` command line."""

import sys

from iat.cli import main

sys.exit(main())
