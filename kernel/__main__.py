"""``python -m kernel`` is the ``kernel`` command."""

from kernel.early import main

raise SystemExit(main())
