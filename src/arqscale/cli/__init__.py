"""The ``arqscale`` command line: ``main`` dispatches to one module per subcommand.

Subcommands that start a process import that process's package lazily (``arqscale worker`` never
pays for the API's imports).
"""
