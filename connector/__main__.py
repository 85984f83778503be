"""``python -m connector`` is the ``connector`` command."""

from connector.launch import main

raise SystemExit(main())
