from arqscale.cli.main import main

raise SystemExit(main())
