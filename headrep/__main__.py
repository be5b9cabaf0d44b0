"""`python -m headrep` = the `headrep` command."""

import sys

from headrep.commands.main import main

sys.exit(main())
