"""The three commands: options -> request, server answer -> files on disk or text on stdout."""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import re
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from audio_studio_cli.client import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, Client, CliError
from audio_studio_cli.progress import waiting

FORMATS = ("wav", "flac", "mp3", "opus")
# Uploads are identified by their content server-side; the type and suffix only help.
MEDIA_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}
SLUG_CHARS = 48
STDOUT = Path("-")  # `-o -`: the audio to stdout, for a pipe


def fields(**values: Any) -> dict[str, Any]:
    """Only the options the user gave: the server owns the defaults, so the CLI never drifts from them."""
    return {key: value for key, value in values.items() if value is not None}


def form(values: dict[str, Any]) -> dict[str, str]:
    """Multipart text parts; flags as the words pydantic reads."""
    return {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in values.items()}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:SLUG_CHARS].rstrip("-")


def resolve_format(fmt: str | None, output: Path | None) -> str:
    """--format, else the -o suffix when it is one the server writes, else wav."""
    suffix = output.suffix.lower().lstrip(".") if output else ""
    if fmt is None:
        return suffix if suffix in FORMATS else "wav"
    if suffix in FORMATS and suffix != fmt:
        raise CliError(f"-o {output} is a .{suffix} name but --format is {fmt}", EXIT_BAD_INPUT)
    return fmt


def check_output(output: Path | None, files: int = 1) -> None:
    """Before the request: a generation can take minutes, and its result should not be lost to a typo."""
    if output == STDOUT:
        if files > 1:
            raise CliError(f"-o - writes one file to stdout; with -n {files} name the files (-o NAME)", EXIT_BAD_INPUT)
    elif output is not None and not output.parent.is_dir():
        raise CliError(f"-o {output}: the folder {output.parent} does not exist", EXIT_BAD_INPUT)


def check_input(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CliError(f"{what} {path}: no such file", EXIT_BAD_INPUT)
    return path


def upload(stack: ExitStack, path: Path) -> tuple[str, IO[bytes], str]:
    """A streamed multipart file part (not read into memory)."""
    return (
        path.name,
        stack.enter_context(path.open("rb")),
        MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream"),
    )


def numbered(path: Path, index: int) -> Path:
    return path.with_name(f"{path.stem}-{index}{path.suffix}")


def write(path: Path, data: bytes, seed: Any, clap_score: Any = None, critic_score: Any = None) -> None:
    """Write one file and say so on stdout: the path first (for scripts), then how to regenerate it. With
    `-o -` the audio is stdout, and the line goes to stderr."""
    report = sys.stdout
    try:
        if path == STDOUT:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            report = sys.stderr
        else:
            path.write_bytes(data)
    except OSError as error:
        raise CliError(f"{path}: {error.strerror or error}", EXIT_FAILED) from None
    line = f"{path}  seed={seed}"
    if clap_score not in (None, ""):
        line += f"  clap={float(clap_score):.3f}"
    if critic_score not in (None, ""):
        line += f"  critic={critic_score}/10"
    print(line, file=report, flush=True)


def default_output(stem: str, seed: Any, fmt: str, files: int = 1) -> Path:
    """A name from the prompt (or the seed) that no earlier file has: NAME, else NAME-2, NAME-3, ... (for `files`
    candidates, none of NAME-0, NAME-1, ... may exist). Only a name given with -o is written over."""
    stem = stem or f"audio-{seed}"
    names = itertools.chain([Path(f"{stem}.{fmt}")], (Path(f"{stem}-{n}.{fmt}") for n in itertools.count(2)))
    return next(path for path in names if not any(taken.exists() for taken in files_of(path, files)))


def files_of(base: Path, files: int) -> list[Path]:
    """The files written for `base`: itself, or NAME-0, NAME-1, ... for several candidates."""
    return [base] if files == 1 else [numbered(base, index) for index in range(files)]


def generate(client: Client, args: argparse.Namespace) -> int:
    fmt = resolve_format(args.format, args.output)
    check_output(args.output, args.n)
    request = fields(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        duration=args.duration,
        steps=args.steps,
        scheduler=args.scheduler,
        guidance_scale=args.guidance_scale,
        num_waveforms=args.n,
        rank_by=args.rank_by,
        model=args.model,
        seed=args.seed,
        format=fmt,
        compression=args.compression,
    )
    if args.n == 1:
        with waiting("generating"):
            response = client.post("/generate", json=request)
        seed = response.headers.get("x-seed")
        write(
            args.output or default_output(slug(args.prompt), seed, fmt),
            response.content,
            seed,
            response.headers.get("x-clap-score"),
            response.headers.get("x-critic-score"),
        )
        return EXIT_OK
    with waiting(f"generating {args.n} waveforms"):
        body = client.post("/generate/json", json=request).json()
    waveforms = body["waveforms"]  # best first when ranked: keep that order in the file numbers
    base = args.output or default_output(slug(args.prompt), waveforms[0]["seed"], fmt, len(waveforms))
    for path, waveform in zip(files_of(base, len(waveforms)), waveforms, strict=True):
        write(
            path,
            base64.b64decode(waveform["audio_base64"]),
            waveform["seed"],
            waveform.get("clap_score"),
            waveform.get("critic_score"),
        )
    return EXIT_OK


def transform(client: Client, args: argparse.Namespace) -> int:
    source = check_input(args.audio, "audio")
    fmt = resolve_format(args.format, args.output)
    check_output(args.output)
    request = fields(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        strength=args.strength,
        steps=args.steps,
        scheduler=args.scheduler,
        guidance_scale=args.guidance_scale,
        model=args.model,
        seed=args.seed,
        format=fmt,
        compression=args.compression,
    )
    with ExitStack() as stack, waiting("transforming"):
        response = client.post("/transform", data=form(request), files={"audio": upload(stack, source)})
    seed = response.headers.get("x-seed")
    # The input's stem first, so a default name can never be the input file itself.
    stem = "-".join(part for part in (slug(source.stem) or "audio", slug(args.prompt)) if part)
    write(args.output or default_output(stem, seed, fmt), response.content, seed)
    return EXIT_OK


def critique(client: Client, args: argparse.Namespace) -> int:
    clips = [("audio", args.audio), ("reference", args.reference)]
    clips = [(name, check_input(path, name)) for name, path in clips if path is not None]
    request = fields(
        preset=args.preset,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
        do_sample=True if args.sample else None,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        output="json" if args.structured else None,
        long_audio=args.long_audio,
    )
    with ExitStack() as stack, waiting("critiquing"):
        files = [(name, upload(stack, path)) for name, path in clips]
        body = client.post("/critique", data=form(request), files=files or None).json()
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(json.dumps(body["structured"], indent=2, ensure_ascii=False) if body.get("structured") else body["text"])
    if body.get("segments"):
        spans = ", ".join(f"{s['start_s']:g}-{s['end_s']:g} s" for s in body["segments"])
        print(f"note: heard in {len(body['segments'])} segments ({spans}) and summarised", file=sys.stderr)
    for clip in body.get("audio_seconds", []):
        if clip.get("truncated"):
            print(f"note: {clip['field']} was cut to the model's limit of {clip['seconds']:g} s", file=sys.stderr)
    return EXIT_OK


def models(client: Client, args: argparse.Namespace) -> int:
    """The model families the server runs, one per line: name, checkpoint, features, longest clip."""
    for family in client.get("/models").json()["models"]:
        limit = f"  up to {family['max_seconds']:g} s" if family["max_seconds"] is not None else ""
        default = "  (default)" if family["default"] else ""
        print(f"{family['name']}  {family['checkpoint']}  {','.join(family['features'])}{limit}{default}")
    return 0
