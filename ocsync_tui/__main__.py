from ocsync_tui.cli import main

raise SystemExit(main())
