"""``python -m tl_circuits.cli``: the ``tl-circuits`` command line."""

from tl_circuits.cli import main

raise SystemExit(main())
