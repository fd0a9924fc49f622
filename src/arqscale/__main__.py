from arqscale.cli import main

raise SystemExit(main())
