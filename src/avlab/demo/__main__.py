"""Serve the demo: `python -m avlab.demo [smile=CKPT] [vad=CKPT] [tts=CKPT] [pronunciation=CKPT]
[host=127.0.0.1] [port=7860] [share=false]` — one tab per checkpoint given."""

from __future__ import annotations

import sys

USAGE = (
    "usage: python -m avlab.demo [smile=CKPT] [vad=CKPT] [tts=CKPT] [pronunciation=CKPT] "
    "[host=127.0.0.1] [port=7860] [share=false]"
)
TASK_KEYS = ("smile", "vad", "tts", "pronunciation")


def parse_args(argv: list[str]) -> tuple[dict[str, str], dict[str, object]]:
    """(checkpoint per task key, server options) from key=value arguments."""
    checkpoints: dict[str, str] = {}
    server: dict[str, object] = {"host": "127.0.0.1", "port": 7860, "share": False}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise SystemExit(f"{item!r} is not key=value\n{USAGE}")
        if key in TASK_KEYS:
            checkpoints[key] = value
        elif key == "port":
            server["port"] = int(value)
        elif key == "host":
            server["host"] = value
        elif key == "share":
            server["share"] = value.lower() in ("1", "true", "yes")
        else:
            raise SystemExit(f"unknown argument {key!r}\n{USAGE}")
    if not checkpoints:
        raise SystemExit(f"give at least one checkpoint\n{USAGE}")
    return checkpoints, server


def main(argv: list[str] | None = None) -> None:
    """Load every checkpoint (a bad one stops here, named), then serve the page."""
    checkpoints, server = parse_args(sys.argv[1:] if argv is None else argv)
    from avlab.demo.app import build_app, launch, load_backends

    try:
        backends = load_backends(checkpoints)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"avlab.demo: {err}") from None
    print(f"avlab demo: tabs {', '.join(backends)} on http://{server['host']}:{server['port']}")
    launch(build_app(backends), **server)


if __name__ == "__main__":
    main()
