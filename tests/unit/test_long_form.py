"""Long-form AudioLDM2: windows and their fusion, tiled decoding and encoding, work in pieces. Whole long jobs and
the single-latent fingerprints, slow for this tier: tests/test_long_form_engine.py."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch

from models.audioldm2 import AudioLDM2Engine, JobAudio
from models.multidiffusion import Fusion, Windows, split
from models.pieces import Pieces
from models.tiled_vae import decode_tiled, encode_tiled, vocode_chunked
from runners.audioldm2_in_process import InProcessScheduler
from runners.batching import GroupRun
from runners.cancellation import CANCELLED_WHILE_RUNNING
from runners.step_scheduler import Start
from schemas import GenerationJob, ProgressPhase, RunnerJob, RunnerProgress, TransformJob, samples_to_bytes


def windows_of(frames: int, size: int = 8, overlap: int = 4) -> Windows:
    return Windows(frames, size, overlap)


@pytest.mark.parametrize(("frames", "size", "overlap"), [(8, 8, 0), (9, 8, 4), (30, 8, 4), (100, 16, 8), (64, 16, 1)])
def test_windows_cover_every_frame_with_no_gap_wider_than_the_stride(frames: int, size: int, overlap: int) -> None:
    windows = Windows(frames, size, overlap)
    starts = windows.starts
    assert starts[0] == 0 and starts[-1] == frames - size
    assert all(0 < b - a <= size - overlap for a, b in itertools.pairwise(starts))


def test_fusion_is_the_weighted_average_of_the_windows_covering_each_frame() -> None:
    """A stand-in denoiser that answers window i with the constant i: the fused value at each frame is known."""
    windows = windows_of(30)
    latents = torch.zeros(2, 3, 30, 4, dtype=torch.float64)
    fusion = Fusion(latents, windows)
    rows = latents.shape[0]
    fusion.add(torch.cat([torch.full((rows, 3, 8, 4), float(i), dtype=torch.float64) for i in range(len(windows))]))
    weight = windows.weights(torch.device("cpu"), torch.float64)
    expected = torch.zeros(30, dtype=torch.float64)
    norm = torch.zeros(30, dtype=torch.float64)
    for i, start in enumerate(windows.starts):
        expected[start : start + 8] += i * weight
        norm[start : start + 8] += weight
    torch.testing.assert_close(fusion.result()[0, 0, :, 0], expected / norm, rtol=0, atol=1e-12)


def test_fusing_a_latents_own_windows_gives_it_back_however_they_arrive() -> None:
    latents = torch.randn(2, 8, 50, 16, generator=torch.Generator().manual_seed(0))
    windows = windows_of(50, 16, 8)
    whole = Fusion(latents, windows)
    whole.add(split(latents, windows))
    piecewise = Fusion(latents, windows)
    for first in range(len(windows)):  # one window per pass, as a long job's step spread over iterations
        piecewise.add(split(latents, windows, first, first + 1))
    assert torch.equal(whole.result(), piecewise.result())
    torch.testing.assert_close(whole.result(), latents, rtol=1e-6, atol=1e-6)


LONG = {"prompt": "a slow pad with rain", "duration": 40.0, "steps": 2, "seed": 5, "guidance_scale": 3.0}


def denoise_passes(run: GroupRun[JobAudio]) -> int:
    return next(int(p.attributes["passes"]) for p in run.phases if p.name == "denoise")


# ---- decoding in tiles ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def latent_of_24_seconds() -> torch.Tensor:
    return torch.randn(1, 8, 600, 16, generator=torch.Generator().manual_seed(0))  # three tiles of 256


def relative_error(result: torch.Tensor, reference: torch.Tensor) -> float:
    return float((result - reference).abs().max() / reference.abs().max())


def test_tiles_with_shared_statistics_decode_as_the_whole_latent_does(
    engine: AudioLDM2Engine, latent_of_24_seconds: torch.Tensor
) -> None:
    """Exact but for the mid-block's attention: with it made the identity (a hook), tiles == whole to float
    rounding, so the halo covers the convolutions and the shared GroupNorm statistics are the whole latent's.
    With attention, each tile attends within itself and its halo: 1.9% of the peak here (random weights),
    where tiles normalised on their own (diffusers' tiling) are off by 12.6%."""
    vae = engine.pipe.vae
    with torch.no_grad():
        whole = vae.decode(latent_of_24_seconds).sample
        tiled = decode_tiled(vae, latent_of_24_seconds, engine.window_frames).run()
        vae.enable_tiling()
        try:
            independent = vae.decode(latent_of_24_seconds).sample
        finally:
            vae.disable_tiling()
        handle = vae.decoder.mid_block.attentions[0].register_forward_hook(lambda module, args, output: args[0])
        try:
            whole_without_attention = vae.decode(latent_of_24_seconds).sample
            tiled_without_attention = decode_tiled(vae, latent_of_24_seconds, engine.window_frames).run()
        finally:
            handle.remove()
    assert relative_error(tiled_without_attention, whole_without_attention) < 1e-5
    assert relative_error(tiled, whole) < 0.03
    assert relative_error(independent, whole) > 3 * relative_error(tiled, whole)


def test_the_vocoder_in_chunks_equals_the_whole_vocoder(engine: AudioLDM2Engine) -> None:
    """Chunks carry more context than the vocoder's receptive field, so only float rounding differs (~4e-7)."""
    mel = torch.randn(1, 2400, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = engine.pipe.vocoder(mel).reshape(-1)
        chunked = vocode_chunked(engine.pipe.vocoder, mel, chunk=512).run()
    assert chunked.shape[0] == 2400 * 160
    assert relative_error(chunked, whole[: chunked.shape[0]]) < 1e-5


def test_tiles_encode_as_the_whole_clip_does(engine: AudioLDM2Engine) -> None:
    """The encoder side (long transforms), as for decoding: exact with the mid-block's attention made the
    identity, within a few percent of the latent's peak with it (each tile attends within itself)."""
    vae = engine.pipe.vae
    mel = torch.randn(1, 1, 2400, 64, generator=torch.Generator().manual_seed(2))
    attention = vae.encoder.mid_block.attentions[0]
    with torch.no_grad():
        whole = vae.encode(mel).latent_dist.mean
        tiled = encode_tiled(vae, lambda: mel, 2400, engine.window_frames).run()
        handle = attention.register_forward_hook(lambda module, args, output: args[0])
        try:
            whole_without_attention = vae.encode(mel).latent_dist.mean
            tiled_without_attention = encode_tiled(vae, lambda: mel, 2400, engine.window_frames).run()
        finally:
            handle.remove()
    assert tiled.shape == whole.shape == (1, 8, 600, 16)
    assert relative_error(tiled_without_attention, whole_without_attention) < 1e-5
    assert relative_error(tiled, whole) < 0.05


# ---- a long transform's encoding, in pieces ---------------------------------------------------------------


def test_encodings_in_pieces_interleaved_with_other_work_equal_each_alone(engine: AudioLDM2Engine) -> None:
    """Two tiled encodings stepped in turn, and another job's whole-clip encode between every two pieces, as the
    step scheduler interleaves them: each result is bit-identical to its encoding alone, the whole-clip encode
    never sees the tiles' GroupNorm patches, and each plan runs exactly the pieces it announced. Small tiles:
    many pieces, cheaply."""
    vae = engine.pipe.vae
    mels = [torch.randn(1, 1, frames, 64, generator=torch.Generator().manual_seed(frames)) for frames in (276, 200)]
    short = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))

    def plan(mel: torch.Tensor) -> Pieces[torch.Tensor]:
        return encode_tiled(vae, lambda: mel, mel.shape[2], tile_frames=32, halo=8)

    alone = [plan(mel).run() for mel in mels]
    with torch.no_grad():
        whole_short = vae.encode(short).latent_dist.mean
        plans, between = [plan(mel) for mel in mels], []
        while not all(p.finished for p in plans):
            for p in plans:
                if not p.finished:
                    p.step()
            between.append(vae.encode(short).latent_dist.mean)
    assert [p.done for p in plans] == [p.total for p in plans] and min(p.total for p in plans) > 20
    assert all(torch.equal(p.result, a) for p, a in zip(plans, alone, strict=True))
    assert all(torch.equal(b, whole_short) for b in between)


@dataclass(frozen=True)
class LongWork:
    """A job just over the single-latent length, whose clip is encoded (a transform) or decoded in tiles: dozens
    of pieces on the tiny model, each one run of `module`."""

    job: RunnerJob
    start: Start
    module: torch.nn.Module
    phase: ProgressPhase


@pytest.fixture(params=["encoding", "decoding"])
def long_work(request: pytest.FixtureRequest, engine: AudioLDM2Engine) -> LongWork:
    if request.param == "encoding":
        clip = torch.randn(31 * 16_000, generator=torch.Generator().manual_seed(9)).numpy() * 0.1
        job = TransformJob(
            prompt="the same, as rain", seed=3, steps=4, strength=0.5, samples_f32le=samples_to_bytes(clip)
        )
        return LongWork(job, engine.start_transform, engine.pipe.vae.encoder, "encoding")  # type: ignore[arg-type]
    job = GenerationJob(prompt="a long drone", duration=31.0, steps=1, seed=4, guidance_scale=1.0)
    return LongWork(job, engine.start_generation, engine.pipe.vae.decoder, "decoding")  # type: ignore[arg-type]


@contextmanager
def on_each_call(module: torch.nn.Module, call: Callable[[int], None]) -> Iterator[None]:
    """`call(n)` as `module` starts its n-th run (one per piece of a tiled encoding or decoding), on the model
    thread."""
    calls = itertools.count(1)
    handle = module.register_forward_pre_hook(lambda module, args: call(next(calls)))
    try:
        yield
    finally:
        handle.remove()


def test_a_cancelled_long_job_stops_at_the_piece_after_the_cancel(
    long_work: LongWork, scheduled: InProcessScheduler
) -> None:
    """Cancelled while its clip is encoded or decoded: it leaves between two pieces, not after the whole clip;
    meanwhile its progress counts the pieces."""
    job = long_work.job
    seen: list[RunnerProgress] = []

    def cancel_at_the_third(n: int) -> None:
        seen.append(scheduled.board.read([job.job_id])[0])
        if n == 3:
            scheduled.cancelled.add([job.job_id])

    with on_each_call(long_work.module, cancel_at_the_third):
        [run] = scheduled.run([job], long_work.start)
    assert run.error == CANCELLED_WHILE_RUNNING
    assert len(seen) == 3  # the piece running when the cancel came was the last
    assert [(p.phase, p.unit, p.done) for p in seen] == [(long_work.phase, "pieces", n) for n in range(3)]
    assert len({p.total for p in seen}) == 1 and seen[0].total > 20


def test_a_short_generate_sent_while_a_long_clip_is_encoded_or_decoded_is_answered_before_that_ends(
    long_work: LongWork, scheduled: InProcessScheduler
) -> None:
    """Order of completion: the short job's steps run between the long job's pieces."""
    job = long_work.job
    short = GenerationJob(prompt="a bell", duration=1.0, steps=2, seed=1)
    sent: Future[Future[GroupRun[JobAudio]]] = Future()
    answered: list[RunnerProgress] = []

    def send_the_short_one_at_the_fourth(n: int) -> None:
        if n == 4:
            [future] = scheduled.scheduler.submit([short], scheduled.engine.start_generation)  # type: ignore[arg-type]
            future.add_done_callback(lambda _: answered.append(scheduled.board.read([job.job_id])[0]))
            sent.set_result(future)

    with on_each_call(long_work.module, send_the_short_one_at_the_fourth):
        [long] = scheduled.scheduler.submit([job], long_work.start)
        try:
            assert sent.result(timeout=600).result(timeout=600).error is None
        finally:
            scheduled.cancelled.add([job.job_id])  # the rest of it is not needed
            long.result(timeout=600)
    [progress] = answered
    assert progress.phase == long_work.phase and progress.done < progress.total, progress


def test_a_denoised_job_is_decoded_before_a_newer_job_starts(
    engine: AudioLDM2Engine, scheduled: InProcessScheduler
) -> None:
    """A job sent during another's last denoising step waits for that one's decoding (its last piece), though
    it has had less service: the denoised job is answered first, and its client's next request can join the
    passes (runners/step_scheduler.py `_priority`)."""
    first = GenerationJob(prompt="a bell", duration=1.0, steps=2, seed=1)
    newer = GenerationJob(prompt="a gong", duration=1.0, steps=2, seed=2)
    sent: Future[Future[GroupRun[JobAudio]]] = Future()
    newer_at_the_answer: list[RunnerProgress] = []

    def send_the_newer_at_the_last_pass(n: int) -> None:
        if n == 2:
            [future] = scheduled.scheduler.submit([newer], engine.start_generation)  # type: ignore[arg-type]
            sent.set_result(future)

    with on_each_call(engine.pipe.unet, send_the_newer_at_the_last_pass):
        [answer] = scheduled.scheduler.submit([first], engine.start_generation)  # type: ignore[arg-type]
        answer.add_done_callback(lambda _: newer_at_the_answer.append(scheduled.board.read([newer.job_id])[0]))
        assert answer.result(timeout=600).error is None
        assert sent.result(timeout=600).result(timeout=600).error is None
    [progress] = newer_at_the_answer
    assert progress.phase in ("queued", "encoding") and progress.done == 0, progress
