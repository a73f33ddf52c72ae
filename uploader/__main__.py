"""``python -m uploader`` runs the command line."""

from uploader.cli import main

raise SystemExit(main())
