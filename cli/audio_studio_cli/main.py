"""`audio-studio`: options, dispatch, and the one place failures turn into a stderr line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audio_studio import ApiError, Client
from audio_studio.asynchronous import DEFAULT_TIMEOUT_S, DEFAULT_URL, client_version
from audio_studio_cli import commands
from audio_studio_cli.exits import EXIT_BAD_INPUT, EXIT_CANCELLED, CliError, from_api
from audio_studio_cli.limits import span

CANCELLED = "cancelled: stopped waiting"

EPILOG = f"""\
exit codes:
  0    ok
  1    the server failed (5xx), the job failed or was cancelled, or something else unexpected
  2    bad input: the server refused the request (400, 413, 415; the message names
       the field and the limit) or a local usage error (bad option, missing file)
  3    server unavailable or overloaded: connection refused, timeout, 503, 429
  130  cancelled with Ctrl-C (a job is cancelled on the server too)

environment:
  AUDIO_STUDIO_URL      server URL (default {DEFAULT_URL})
  AUDIO_STUDIO_API_KEY  sent as "Authorization: Bearer <key>"
"""


def server_options(after_command: bool) -> argparse.ArgumentParser:
    """The server options, taken before the command (with their defaults) and after it (without: an option
    given before the command is not reset by the subcommand's parser)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if after_command else value

    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("server")
    group.add_argument(
        "--url",
        default=default(os.environ.get("AUDIO_STUDIO_URL", DEFAULT_URL)),
        help="server URL (env AUDIO_STUDIO_URL)",
    )
    # No env default here: argparse would print the key in --help.
    group.add_argument(
        "--api-key", metavar="KEY", default=default(None), help="sent as a Bearer token (env AUDIO_STUDIO_API_KEY)"
    )
    group.add_argument(
        "--timeout", type=float, metavar="SECONDS", default=default(DEFAULT_TIMEOUT_S),
        help=f"seconds to wait for one HTTP answer (default {DEFAULT_TIMEOUT_S:g}); a job is followed while it runs",
    )  # fmt: skip
    return parser


def no_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true", help="submit as a job, print its id and return")


def diffusion_options(parser: argparse.ArgumentParser, request: str, model: bool = True) -> None:
    """Knobs /generate, /transform and /edit share (/edit is AudioLDM2's alone: no --model). Unset options are not
    sent: the server's defaults apply."""
    if model:
        parser.add_argument(
            "--model", metavar="FAMILY", help="audioldm2 (default) or another family the server runs (see `models`)"
        )
    parser.add_argument("--steps", type=int, metavar="N", help=f"denoising steps, {span(request, 'steps')}")
    parser.add_argument("--scheduler", metavar="NAME", help="dpmpp (default) or ddim (wants ~200 steps)")
    parser.add_argument(
        "--guidance-scale", type=float, metavar="SCALE", help=f"{span(request, 'guidance_scale')}; <= 1 turns it off"
    )
    parser.add_argument(
        "--negative-prompt", metavar="TEXT", help='what to steer away from (server default "Low quality.")'
    )
    parser.add_argument(
        "--seed", type=int, metavar="N", help=f"{span(request, 'seed')}; drawn by the server when absent (printed)"
    )
    parser.add_argument("--format", choices=commands.FORMATS, help="audio file format (default: from -o, else wav)")
    parser.add_argument(
        "--compression", type=float, metavar="LEVEL",
        help=f"flac, mp3 and opus: {span(request, 'compression')}, 0 best quality, 1 smallest; defaults per format",
    )  # fmt: skip
    parser.add_argument(
        "-o", "--output", type=Path, metavar="FILE",
        help="output file, or - for stdout (default: a new name from the prompt, never an existing file)",
    )  # fmt: skip
    no_wait(parser)


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="audio-studio",
        description="Generate, transform, edit and critique audio with an audio-studio server.",
        epilog=EPILOG,
        formatter_class=formatter,
        parents=[server_options(after_command=False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {client_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = {"parents": [server_options(after_command=True)], "epilog": EPILOG, "formatter_class": formatter}

    gen = sub.add_parser("generate", help="text to audio", description="Text to audio (16 kHz mono).", **common)
    gen.add_argument("prompt", help="what the audio should sound like")
    gen.add_argument(
        "--duration", type=float, metavar="SECONDS", help=f"seconds, {span('GenerateRequest', 'duration')}"
    )
    gen.add_argument(
        "-n", "--num-waveforms", dest="n", type=int, default=1,
        help=f"candidates, {span('GenerateRequest', 'num_waveforms')}; with more than one, files NAME-0, NAME-1, ... "
        "best first",
    )  # fmt: skip
    gen.add_argument(
        "--rank-by", choices=("clap", "critic"),
        help="order candidates by CLAP score (server default) or by Music Flamingo listening to each",
    )  # fmt: skip
    diffusion_options(gen, "GenerateRequest")
    gen.set_defaults(run=commands.generate)

    tra = sub.add_parser(
        "transform", help="audio to audio", description="Re-synthesise a clip toward a prompt.", **common
    )
    tra.add_argument("audio", type=Path, help="WAV, FLAC, MP3 or OGG clip (its longest: see `models`)")
    tra.add_argument("prompt", help="what it should sound like")
    tra.add_argument(
        "--strength",
        type=float,
        metavar="S",
        help=f"{span('TransformRequest', 'strength')}: 0 keeps, 1 ignores the input",
    )
    diffusion_options(tra, "TransformRequest")
    tra.set_defaults(run=commands.transform)

    edi = sub.add_parser(
        "edit", help="regenerate a range of a clip, or extend it",
        description="Edit a clip: regenerate a time range under a prompt (--inpaint START-END) or add audio at its end "
        "or start (--extend SECONDS); the rest of the clip is kept.", **common,
    )  # fmt: skip
    edi.add_argument("audio", type=Path, help="WAV, FLAC, MP3 or OGG clip (its longest: see `models`)")
    edi.add_argument("prompt", help="what the new audio should sound like")
    mode = edi.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--inpaint", metavar="START-END", help="seconds into the clip, e.g. 3.5-6: that range is regenerated"
    )
    mode.add_argument(
        "--extend", type=float, metavar="SECONDS", help=f"seconds to add, {span('EditRequest', 'seconds')} in all"
    )
    edi.add_argument("--side", choices=("end", "start"), help="where --extend adds audio (server default end)")
    edi.add_argument(
        "--blend", type=float, metavar="SECONDS",
        help=f"crossfade at each boundary, {span('EditRequest', 'blend_s')}",
    )  # fmt: skip
    edi.add_argument(
        "--repaint-jumps", type=int, metavar="N",
        help=f"RePaint resampling, {span('EditRequest', 'repaint_jumps')}: better seams, N + 1 times the steps",
    )  # fmt: skip
    diffusion_options(edi, "EditRequest", model=False)
    edi.set_defaults(run=commands.edit)

    cri = sub.add_parser(
        "critique", help="audio (and text) to text",
        description="Ask Music Flamingo about a recording. The text is printed as it is written.", **common,
    )  # fmt: skip
    cri.add_argument("audio", type=Path, nargs="?", help="the recording (optional with --prompt)")
    cri.add_argument("--reference", type=Path, metavar="FILE", help="a reference recording to compare with")
    cri.add_argument(
        "--preset", metavar="NAME", help="describe, caption, key, tempo, feedback or compare (needs --reference)"
    )
    cri.add_argument("--prompt", metavar="TEXT", help="your question; added after the preset's, or alone")
    cri.add_argument("--max-new-tokens", type=int, metavar="N", help=span("CritiqueRequest", "max_new_tokens"))
    cri.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    cri.add_argument(
        "--temperature", type=float, metavar="T", help=f"{span('CritiqueRequest', 'temperature')}, with --sample"
    )
    cri.add_argument("--top-p", type=float, metavar="P", help=f"{span('CritiqueRequest', 'top_p')}, with --sample")
    cri.add_argument("--seed", type=int, metavar="N", help=f"sampling seed, {span('CritiqueRequest', 'seed')}")
    cri.add_argument(
        "--structured", action="store_true",
        help="ask for the structured critique (scores, time-stamped findings, practice plan) and print it as JSON",
    )  # fmt: skip
    cri.add_argument(
        "--long-audio", choices=("truncate", "segments"),
        help="a recording longer than the model hears at once: its beginning (server default) or all of it in segments",
    )  # fmt: skip
    cri.add_argument("--json", action="store_true", help="print the whole response JSON instead of the text")
    no_wait(cri)
    cri.set_defaults(run=commands.critique)

    mod = sub.add_parser("models", help="the model families the server runs", **common)
    mod.set_defaults(run=commands.models)
    jobs_commands(sub, common)
    return parser


def jobs_commands(sub: Any, common: dict[str, Any]) -> None:
    """`jobs status|wait|result|cancel ID` (the server cannot list jobs)."""
    jobs = sub.add_parser("jobs", help="follow, fetch or cancel a job by its id", **common)
    verbs = jobs.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, run, text in (
        ("status", commands.jobs_status, "its state and progress, one line"),
        ("wait", commands.jobs_wait, "follow it with progress, then write its result"),
        ("result", commands.jobs_result, "write its result now (refused until it succeeded)"),
        ("cancel", commands.jobs_cancel, "cancel it: queued, it never runs; running, it stops at its next step"),
    ):
        parser = verbs.add_parser(verb, help=text, description=text, **common)
        parser.add_argument("job_id", metavar="ID")
        parser.add_argument("--json", action="store_true", help="print the status or critique as JSON")
        if verb in ("wait", "result"):
            parser.add_argument("-o", "--output", type=Path, metavar="FILE", help="where an audio result goes")
        parser.set_defaults(run=run)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    api_key = args.api_key or os.environ.get("AUDIO_STUDIO_API_KEY")
    try:
        if not args.url.startswith(("http://", "https://")):
            raise CliError(f"--url {args.url!r} must start with http:// or https://", EXIT_BAD_INPUT)
        if args.timeout <= 0:
            raise CliError(f"--timeout must be positive, not {args.timeout:g}", EXIT_BAD_INPUT)
        with Client(args.url, api_key, args.timeout) as client:
            return args.run(client, args)
    except ApiError as error:
        return fail(from_api(error))
    except CliError as error:
        return fail(error)
    except KeyboardInterrupt:
        return fail(CliError(CANCELLED, EXIT_CANCELLED))
    except BrokenPipeError:  # `| head`: the reader left; say nothing more (Python's advice: stdout to devnull)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def fail(error: CliError) -> int:
    prefix = "\n" if error.exit_code == EXIT_CANCELLED and sys.stderr.isatty() else ""
    print(f"{prefix}error: {error}" if error.exit_code != EXIT_CANCELLED else f"{prefix}{error}", file=sys.stderr)
    return error.exit_code
