"""`python -m agentheal …`, the same as the `agentheal` command."""

import sys

from agentheal.cli import main

sys.exit(main())
