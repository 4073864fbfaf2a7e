"""`python -m mediad`."""

import sys

from mediad.cli import main

sys.exit(main())
