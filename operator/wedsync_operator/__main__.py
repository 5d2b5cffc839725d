from wedsync_operator.cli import main

raise SystemExit(main())
