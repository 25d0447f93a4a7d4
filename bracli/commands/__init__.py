"""One module per `bra` command. Each exposes NAME, EPILOG and ``command`` (or a Typer ``app``).

Keep module level free of torch/ultralytics imports: ``bra --help`` imports every module here.
"""
