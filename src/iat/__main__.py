"""`python -m iat ...` is the `iat` command."""

import sys

from iat.cli import main

sys.exit(main())
