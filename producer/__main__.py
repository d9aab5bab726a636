"""`python -m producer` = `linewatch-producer`."""

import sys

from producer.cli import main

sys.exit(main())
