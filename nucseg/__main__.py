from nucseg.cli import main

raise SystemExit(main())
