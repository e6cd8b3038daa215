"""`audio-studio`: options, dispatch, and the one place failures turn into a stderr line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from audio_studio_cli import commands
from audio_studio_cli.client import EXIT_CANCELLED, Client, CliError, cli_version

DEFAULT_URL = "http://localhost:3000"
DEFAULT_TIMEOUT_S = 900.0  # the server's own request timeout: a 30 s clip at many steps takes minutes on CPU
CANCELLED = "cancelled: stopped waiting; the server drops the work when the connection closes"

EPILOG = f"""\
exit codes:
  0    ok
  1    the server failed (5xx) or something else unexpected
  2    bad input: the server refused the request (400, 413, 415; the message names
       the field and the limit) or a local usage error (bad option, missing file)
  3    server unavailable or overloaded: connection refused, timeout, 503, 429
  130  cancelled with Ctrl-C

environment:
  AUDIO_STUDIO_URL      server URL (default {DEFAULT_URL})
  AUDIO_STUDIO_API_KEY  sent as "Authorization: Bearer <key>"
"""


def server_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("server")
    group.add_argument(
        "--url", default=os.environ.get("AUDIO_STUDIO_URL", DEFAULT_URL), help="server URL (env AUDIO_STUDIO_URL)"
    )
    # No env default here: argparse would print the key in --help.
    group.add_argument("--api-key", metavar="KEY", help="sent as a Bearer token (env AUDIO_STUDIO_API_KEY)")
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait (default {DEFAULT_TIMEOUT_S:g})",
    )
    return parser


def diffusion_options(parser: argparse.ArgumentParser) -> None:
    """Knobs /generate and /transform share. Unset options are not sent: the server's defaults apply."""
    parser.add_argument(
        "--model", metavar="FAMILY", help="audioldm2 (default) or another family the server runs (see `models`)"
    )
    parser.add_argument("--steps", type=int, metavar="N", help="denoising steps, 1 to 500 (server default 25)")
    parser.add_argument("--scheduler", metavar="NAME", help="dpmpp (default) or ddim (wants ~200 steps)")
    parser.add_argument(
        "--guidance-scale", type=float, metavar="SCALE", help="0 to 20 (server default 3.5); <= 1 turns guidance off"
    )
    parser.add_argument(
        "--negative-prompt", metavar="TEXT", help='what to steer away from (server default "Low quality.")'
    )
    parser.add_argument("--seed", type=int, metavar="N", help="0 to 2^53-1; drawn by the server when absent (printed)")
    parser.add_argument("--format", choices=commands.FORMATS, help="audio file format (default: from -o, else wav)")
    parser.add_argument(
        "--compression",
        type=float,
        metavar="LEVEL",
        help="flac, mp3 and opus: 0 (best quality, largest) to 1 (smallest); server defaults per format",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="output file, or - for stdout (default: a new name from the prompt, never an existing file)",
    )


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="audio-studio",
        description="Generate, transform and critique audio with an audio-studio server.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {cli_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = {"parents": [server_options()], "epilog": EPILOG, "formatter_class": formatter}

    gen = sub.add_parser("generate", help="text to audio", description="Text to audio (16 kHz mono).", **common)
    gen.add_argument("prompt", help="what the audio should sound like")
    gen.add_argument("--duration", type=float, metavar="SECONDS", help="seconds, 1 to 600 (server default 10)")
    gen.add_argument(
        "-n", "--num-waveforms", dest="n", type=int, default=1,
        help="candidates, 1 to 4; with more than one, files NAME-0, NAME-1, ... best first",
    )  # fmt: skip
    gen.add_argument(
        "--rank-by", choices=("clap", "critic"),
        help="order candidates by CLAP score (server default) or by Music Flamingo listening to each",
    )  # fmt: skip
    diffusion_options(gen)
    gen.set_defaults(run=commands.generate)

    tra = sub.add_parser(
        "transform", help="audio to audio", description="Re-synthesise a clip toward a prompt.", **common
    )
    tra.add_argument("audio", type=Path, help="WAV, FLAC, MP3 or OGG clip, 1 to 600 s")
    tra.add_argument("prompt", help="what it should sound like")
    tra.add_argument("--strength", type=float, metavar="S", help="0 (keep) to 1 (ignore the input); server default 0.6")
    diffusion_options(tra)
    tra.set_defaults(run=commands.transform)

    cri = sub.add_parser(
        "critique", help="audio (and text) to text", description="Ask Music Flamingo about a recording.", **common
    )
    cri.add_argument("audio", type=Path, nargs="?", help="the recording (optional with --prompt)")
    cri.add_argument("--reference", type=Path, metavar="FILE", help="a reference recording to compare with")
    cri.add_argument(
        "--preset", metavar="NAME", help="describe, caption, key, tempo, feedback or compare (needs --reference)"
    )
    cri.add_argument("--prompt", metavar="TEXT", help="your question; added after the preset's, or alone")
    cri.add_argument("--max-new-tokens", type=int, metavar="N", help="1 to 2048 (server default 512)")
    cri.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    cri.add_argument("--temperature", type=float, metavar="T", help="0.01 to 2, with --sample (server default 0.7)")
    cri.add_argument("--top-p", type=float, metavar="P", help="0.01 to 1, with --sample (server default 0.9)")
    cri.add_argument("--seed", type=int, metavar="N", help="sampling seed; drawn by the server when absent")
    cri.add_argument(
        "--structured", action="store_true",
        help="ask for the structured critique (scores, time-stamped findings, practice plan) and print it as JSON",
    )  # fmt: skip
    cri.add_argument(
        "--long-audio", choices=("truncate", "segments"),
        help="a recording longer than the model hears at once: its beginning (server default) or all of it in segments",
    )  # fmt: skip
    cri.add_argument("--json", action="store_true", help="print the whole response JSON instead of the text")
    cri.set_defaults(run=commands.critique)
    mod = sub.add_parser("models", help="the model families the server runs", **common)
    mod.set_defaults(run=commands.models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    api_key = args.api_key or os.environ.get("AUDIO_STUDIO_API_KEY")
    try:
        with Client(args.url, api_key, args.timeout) as client:
            return args.run(client, args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"\n{CANCELLED}" if sys.stderr.isatty() else CANCELLED, file=sys.stderr)
        return EXIT_CANCELLED
