from __future__ import annotations

import sys

from loadtests.bench.run import main

sys.exit(main())
