"""The commands: options -> a request through the client package, the answer -> files on disk or text on stdout.
Generation and transforms run as jobs (progress, cancel on Ctrl-C, no proxy timeout), a text critique streams."""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

from audio_studio import Audio, Client, Critique, Job
from audio_studio_cli.exits import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, CliError
from audio_studio_cli.progress import JobProgress

FORMATS = ("wav", "flac", "mp3", "opus")
SLUG_CHARS = 48
STDOUT = Path("-")  # `-o -`: the audio to stdout, for a pipe


def fields(**values: Any) -> dict[str, Any]:
    """Only the options the user gave: the server owns the defaults, so the CLI never drifts from them."""
    return {key: value for key, value in values.items() if value is not None}


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


def numbered(path: Path, index: int) -> Path:
    return path.with_name(f"{path.stem}-{index}{path.suffix}")


def write(path: Path, audio: Audio) -> None:
    """Write one file and say so on stdout: the path first (for scripts), then how to regenerate it. With
    `-o -` the audio is stdout, and the line goes to stderr."""
    report = sys.stdout
    try:
        if path == STDOUT:
            sys.stdout.buffer.write(audio.data)
            sys.stdout.buffer.flush()
            report = sys.stderr
        else:
            audio.save(path)
    except OSError as error:
        raise CliError(f"{path}: {error.strerror or error}", EXIT_FAILED) from None
    line = f"{path}  seed={audio.seed}"
    if audio.clap_score is not None:
        line += f"  clap={audio.clap_score:.3f}"
    if audio.critic_score is not None:
        line += f"  critic={audio.critic_score:g}/10"
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


def finish(job: Job, label: str, no_wait: bool = False) -> Audio | list[Audio] | Critique | None:
    """`no_wait`: print the job id. Else follow the job with a progress display and return its result; Ctrl-C
    cancels the job and says so."""
    if no_wait:
        print(job.id, flush=True)
        return None
    try:
        with JobProgress(label) as progress:
            job.wait(progress.update)
    except KeyboardInterrupt:
        job.cancel()
        raise CliError(f"cancelled job {job.id}", EXIT_CANCELLED) from None
    return job.result()


def save_audio(result: Audio | list[Audio], output: Path | None, stem: str) -> None:
    """One file, or NAME-0, NAME-1, ... best first; a default name from `stem` (or the seed) never overwrites."""
    audios = result if isinstance(result, list) else [result]
    base = output or default_output(stem, audios[0].seed, audios[0].format, len(audios))
    for path, audio in zip(files_of(base, len(audios)), audios, strict=True):
        write(path, audio)


def diffusion_fields(args: argparse.Namespace, fmt: str | None, **specific: Any) -> dict[str, Any]:
    """The options `diffusion_options` (main.py) adds, and a command's own, as the request's fields."""
    return fields(
        **specific,
        negative_prompt=args.negative_prompt,
        steps=args.steps,
        scheduler=args.scheduler,
        guidance_scale=args.guidance_scale,
        model=getattr(args, "model", None),  # /edit takes none: AudioLDM2's alone
        seed=args.seed,
        format=fmt,
        compression=args.compression,
    )


def input_and_prompt(source: Path, prompt: str) -> str:
    """A default output name's stem: the input's stem first, so it can never be the input file itself."""
    return "-".join(p for p in (slug(source.stem) or "audio", slug(prompt)) if p)


def generate(client: Client, args: argparse.Namespace) -> int:
    fmt = resolve_format(args.format, args.output)
    check_output(args.output, args.n)
    request = diffusion_fields(args, fmt, duration=args.duration, num_waveforms=args.n, rank_by=args.rank_by)
    job = client.submit_generate(args.prompt, candidates=args.n > 1, **request)
    result = finish(job, "generating", args.no_wait)
    if result is not None:
        assert not isinstance(result, Critique)
        save_audio(result, args.output, slug(args.prompt))
    return EXIT_OK


def transform(client: Client, args: argparse.Namespace) -> int:
    source = check_input(args.audio, "audio")
    fmt = resolve_format(args.format, args.output)
    check_output(args.output)
    request = diffusion_fields(args, fmt, strength=args.strength)
    result = finish(client.submit_transform(source, args.prompt, **request), "transforming", args.no_wait)
    if result is not None:
        assert isinstance(result, Audio)
        save_audio(result, args.output, input_and_prompt(source, args.prompt))
    return EXIT_OK


def inpaint_range(text: str) -> tuple[float, float]:
    """`3.5-6` as (3.5, 6.0); the server checks the range against the clip."""
    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError(text)
        return float(start), float(end)
    except ValueError:
        raise CliError(f"--inpaint {text!r} must be START-END in seconds, e.g. 3.5-6", EXIT_BAD_INPUT) from None


def edit(client: Client, args: argparse.Namespace) -> int:
    source = check_input(args.audio, "audio")
    fmt = resolve_format(args.format, args.output)
    check_output(args.output)
    if args.inpaint is not None:
        start_s, end_s = inpaint_range(args.inpaint)
        mode = fields(mode="inpaint", start_s=start_s, end_s=end_s)
    else:
        mode = fields(mode="extend", seconds=args.extend, side=args.side)
    request = diffusion_fields(args, fmt, **mode, blend_s=args.blend, repaint_jumps=args.repaint_jumps)
    result = finish(client.submit_edit(source, args.prompt, **request), "editing", args.no_wait)
    if result is not None:
        assert isinstance(result, Audio)
        save_audio(result, args.output, input_and_prompt(source, args.prompt))
        if result.edited is not None:
            print(f"edited {result.edited[0]:g}-{result.edited[1]:g} s", file=sys.stderr)
    return EXIT_OK


def critique(client: Client, args: argparse.Namespace) -> int:
    """Prose streams to stdout as it is written; `--structured`, `--json` and `--no-wait` run as a job."""
    clips = {name: check_input(path, name) for name, path in (("audio", args.audio), ("reference", args.reference))
             if path is not None}  # fmt: skip
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
    if not (args.structured or args.json or args.no_wait):
        print_critique(stream_text(client, clips, request), args, streamed=True)
        return EXIT_OK
    result = finish(client.submit_critique(**clips, **request), "critiquing", args.no_wait)
    if result is not None:
        assert isinstance(result, Critique)
        print_critique(result, args)
    return EXIT_OK


def stream_text(client: Client, clips: dict[str, Path], request: dict[str, Any]) -> Critique:
    """The text to stdout as it arrives; Ctrl-C closes the connection, and the server drops the row."""
    stream = client.stream_critique(**clips, **request)
    try:
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        raise CliError(
            "cancelled: the connection is closed and the server drops the critique", EXIT_CANCELLED
        ) from None
    print(flush=True)
    assert stream.result is not None
    return stream.result


def print_critique(result: Critique, args: argparse.Namespace, streamed: bool = False) -> None:
    """The text (unless it was streamed), the structured object, or the whole JSON; notes on stderr."""
    body = result.raw
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False))
        return
    if result.structured:
        print(json.dumps(result.structured, indent=2, ensure_ascii=False))
    elif not streamed:
        print(result.text)
    if body.get("segments"):
        spans = ", ".join(f"{s['start_s']:g}-{s['end_s']:g} s" for s in body["segments"])
        print(f"note: heard in {len(body['segments'])} segments ({spans}) and summarised", file=sys.stderr)
    for clip in body.get("audio_seconds", []):
        if clip.get("truncated"):
            print(f"note: {clip['field']} was cut to the model's limit of {clip['seconds']:g} s", file=sys.stderr)


def models(client: Client, args: argparse.Namespace) -> int:
    """The model families the server runs, one per line: name, checkpoint, features, longest clip."""
    for family in client.models():
        limit = f"  up to {family['max_seconds']:g} s" if family["max_seconds"] is not None else ""
        default = "  (default)" if family["default"] else ""
        print(f"{family['name']}  {family['checkpoint']}  {','.join(family['features'])}{limit}{default}")
    return EXIT_OK


# ---- jobs ----------------------------------------------------------------------------------------------------


def job_line(job: Job) -> str:
    status = job.last
    return f"{status.id}  {status.kind}  {status.state}  {status.progress.line()}"


def jobs_status(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.job_id)
    print(json.dumps(job.last.raw, indent=2) if args.json else job_line(job))
    return EXIT_OK


def jobs_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.job_id)
    job.cancel()
    print(job_line(job))
    return EXIT_OK


def jobs_wait(client: Client, args: argparse.Namespace) -> int:
    """Follow the job to its end, then write its result as the command that submitted it would have."""
    job = client.job(args.job_id)
    return save_result(finish(job, f"job {job.id}"), args)


def jobs_result(client: Client, args: argparse.Namespace) -> int:
    """The result now (the server answers 409 while the job has none)."""
    return save_result(client.job(args.job_id).result(), args)


def save_result(result: Audio | list[Audio] | Critique | None, args: argparse.Namespace) -> int:
    if isinstance(result, Critique):
        print_critique(result, args)
    elif result is not None:
        check_output(args.output, len(result) if isinstance(result, list) else 1)
        save_audio(result, args.output, "")
    return EXIT_OK
