"""`python -m diffgemma.runtime.daemon`: the daemon's command line (see `lifecycle.main`)."""

import sys

from diffgemma.runtime.daemon.lifecycle import main

sys.exit(main())
