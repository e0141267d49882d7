"""``python -m ivr.cli``: the `ivr` command."""

from ivr.cli import main

raise SystemExit(main())
