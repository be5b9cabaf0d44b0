"""User-facing errors: the CLI prints these as one clear line and exits non-zero, without a traceback."""


class HeadrepError(Exception):
    """An error caused by the user's input or environment (bad file, missing data, no network)."""


class ModelFileError(HeadrepError):
    """A body-model file is missing, unreadable, or not in SMPL-X format."""


class RenderInputError(HeadrepError):
    """Geometry handed to the renderer is malformed (wrong shapes, NaNs, bad indices)."""


def run_cli(parser, argv, prog: str, interrupt_hints: dict[str, str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand (``args.func``) the way every headrep command does: no
    subcommand prints the help (exit 2); a HeadrepError prints ``PROG CMD: error: …`` on one line (exit 2, no
    traceback); Ctrl-C prints ``PROG CMD: interrupted`` plus the command's hint, if any (exit 130)."""
    import sys

    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    name = f"{prog} {args.command}"
    try:
        return args.func(args)
    except HeadrepError as exc:
        msg = str(exc)
        msg = msg[len(name) + 2:] if msg.startswith(name + ": ") else msg   # the message may name the command
        print(f"{name}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted{(interrupt_hints or {}).get(args.command, '')}", file=sys.stderr)
        return 130
