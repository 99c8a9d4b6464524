from actionrepro.cli import main

raise SystemExit(main())
