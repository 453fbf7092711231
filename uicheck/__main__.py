"""`python -m uicheck` (from the repository root, with `.ui-venv`'s interpreter)."""

from uicheck.run import main

raise SystemExit(main())
