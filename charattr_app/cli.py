"""`charattr app`: the web app, registered through the `charattr.commands` entry point.

`register` only declares the arguments; Gradio is imported when the command runs, and its absence
is one sentence saying how to install it.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

LOOPBACK = "127.0.0.1"


def register(subparsers: argparse._SubParsersAction) -> None:
    from charattr_core.cli import _add_pipeline_options

    p = subparsers.add_parser("app", help="the web app (Gradio): one image with its evidence, a small batch, "
                                          "a benchmark, the asset graph",
                              description="Serve the web app on http://127.0.0.1:7860 (loopback only unless --host).")
    p.add_argument("--host", default=LOOPBACK, help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="default 7860")
    p.add_argument("--files-root", help="server-side paths typed into the app must lie under this folder "
                                        "(default: the current folder)")
    p.add_argument("--max-upload-mb", type=float, default=200, help="largest upload accepted (default 200 MB)")
    _add_pipeline_options(p)
    p.set_defaults(func=app_command)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def app_command(args: argparse.Namespace) -> int:
    from charattr_core.cli import config_from_args
    from charattr_core.errors import ConfigError

    config = config_from_args(args)
    if not 0 < args.port < 65536 or args.max_upload_mb <= 0:
        raise ConfigError("--port must lie between 1 and 65535 and --max-upload-mb must be positive.")
    try:
        from .ui import build_app
    except ImportError as exc:
        raise ConfigError(f"The web app needs Gradio ({exc}); install it with pip install 'charattr[app]' "
                          "(make setup does).") from None
    from .service import AppService

    service = AppService(config, files_root=args.files_root)
    if not _is_loopback(args.host):
        print(f"charattr app: warning: listening on {args.host}: anyone who can reach this machine can use the app "
              f"and read images under {service.files_root}; put it behind an authenticating proxy.", file=sys.stderr)
    print(f"charattr app: http://{args.host}:{args.port} (Ctrl+C stops it)", file=sys.stderr)
    app = build_app(service)
    app.queue(default_concurrency_limit=1)
    try:
        app.launch(server_name=args.host, server_port=args.port, max_file_size=int(args.max_upload_mb * 2**20),
                   show_error=False, quiet=True, ssr_mode=False, share=False)
    finally:
        service.close()
    return 0
