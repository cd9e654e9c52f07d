"""`python -m mini_llm`: the same as the `mini-llm` command."""

import sys

from .cli import main

sys.exit(main())
