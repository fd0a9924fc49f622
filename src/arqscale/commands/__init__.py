"""Subcommands of the ``arqscale`` CLI, one module each (see ``arqscale.cli``)."""
