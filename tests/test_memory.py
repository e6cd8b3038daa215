"""Memory and speed settings per runner (models/memory.py): each is applied and named in the start-up line,
and a combination this machine cannot run stops the runner at start-up with the reason."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from models.audioldm2 import AudioLDM2Engine, load_placed_pipeline
from models.memory import MemoryOptions, UnsupportedMemoryOption, place
from models.music_flamingo import BITSANDBYTES_ON_CPU, CritiqueJob, MusicFlamingoEngine, load_music_flamingo
from models.profiles import Checkpoint, music_flamingo_checkpoint
from runners.audioldm2_in_process import InProcessScheduler
from runners.model_thread import ModelThread
from runners.startup import log_model_choice
from schemas import GenerationJob
from settings import SETTINGS
from tests.conftest import Served

CPU = {"cuda": False}
ON_CPU = {"bitsandbytes_on_cpu": BITSANDBYTES_ON_CPU}


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (MemoryOptions(dtype="float16"), "float16 needs a GPU"),
        (MemoryOptions(offload="model"), "offload=model moves weights between GPU and CPU memory"),
        (MemoryOptions(offload="sequential"), "there is no GPU"),
        (MemoryOptions(attention="flash_attention_2"), "flash_attention_2 runs on CUDA GPUs only"),
        (MemoryOptions(quantization="nf4"), "nf4 weights run on CUDA GPUs only"),
        (MemoryOptions(gpu_memory_gib=10), "splits the weights between GPU and CPU memory, and there is no GPU"),
        (MemoryOptions(quantization="bnb-int8"), "diffusers' bitsandbytes quantizer refuses a CPU"),
    ],
)
def test_what_a_cpu_cannot_run_is_refused_with_the_reason(options: MemoryOptions, reason: str) -> None:
    with pytest.raises(UnsupportedMemoryOption, match=reason):
        place("AudioLDM2", options, torch.float16, **CPU)


def test_flash_attention_needs_its_package_even_on_a_gpu() -> None:
    with pytest.raises(UnsupportedMemoryOption, match="flash-attn package"):
        place("Music Flamingo", MemoryOptions(attention="flash_attention_2"), torch.bfloat16, cuda=True)


def test_auto_is_the_gpus_half_type_or_float32_and_is_named_in_the_start_up_line(
    tiny_audioldm2: Checkpoint, caplog: pytest.LogCaptureFixture
) -> None:
    assert place("AudioLDM2", MemoryOptions(), torch.float16, cuda=True).dtype == torch.float16
    placement = place("AudioLDM2", MemoryOptions(dtype="bfloat16", attention_slicing=True), torch.float16, **CPU)
    assert (placement.device.type, placement.dtype) == ("cpu", torch.bfloat16)
    with caplog.at_level(logging.INFO, logger="bentoml.audio_studio"):
        log_model_choice("AudioLDM2", tiny_audioldm2, placement)
    assert "device=cpu dtype=bfloat16 offload=none attention=sdpa sliced" in caplog.text


@pytest.fixture(scope="module")
def model_thread() -> ModelThread:
    """One thread loads and runs every engine of this module, one after another, as a runner's would."""
    return ModelThread("audioldm2-model")


def latents_with(options: MemoryOptions, path: Path, thread: ModelThread) -> torch.Tensor:
    placement = place("AudioLDM2", options, torch.float16, **CPU)
    engine = thread.call(lambda: AudioLDM2Engine(load_placed_pipeline(str(path), placement)))
    with InProcessScheduler(engine, thread) as scheduled:
        [run] = scheduled.generate([GenerationJob(prompt="a door knock", duration=1.0, steps=3, seed=4)])
    assert run.error is None and run.output is not None, run.error
    return run.output.latents.float()


def test_bfloat16_and_sliced_attention_run_end_to_end(tiny_audioldm2: Checkpoint, model_thread: ModelThread) -> None:
    full = latents_with(MemoryOptions(), tiny_audioldm2.path, model_thread)
    sliced = latents_with(MemoryOptions(attention_slicing=True), tiny_audioldm2.path, model_thread)
    half = latents_with(MemoryOptions(dtype="bfloat16"), tiny_audioldm2.path, model_thread)
    for latents in (sliced, half):
        assert latents.shape == full.shape and torch.isfinite(latents).all()
    assert (sliced - full).abs().max() <= 1e-4 * full.abs().max()  # the same attention, computed in slices
    assert (half - full).abs().max() <= 0.1 * full.abs().max()  # 8 bits of mantissa over 3 steps


def test_music_flamingo_eager_attention_gives_the_tokens_sdpa_gives() -> None:
    path = str(music_flamingo_checkpoint(SETTINGS, None).path)
    job = CritiqueJob(prompt="What is vibrato?", clips=[], max_new_tokens=8)
    tokens = {}
    for attention in ("eager", "sdpa"):
        model, processor = load_music_flamingo(path, torch.device("cpu"), torch.float32, attention)
        assert model.config._attn_implementation == attention
        [output] = MusicFlamingoEngine(model, processor).generate([job])
        tokens[attention] = output.token_ids
    assert tokens["eager"] == tokens["sdpa"] and len(tokens["eager"]) >= 1  # greedy, float32


def test_int8_weights_stay_close_to_float_weights(tiny_audioldm2: Checkpoint, model_thread: ModelThread) -> None:
    """torchao's weight-only int8 on the UNet and text encoders: within 1% of the float run's peak latent."""
    full = latents_with(MemoryOptions(), tiny_audioldm2.path, model_thread)
    int8 = latents_with(MemoryOptions(quantization="int8"), tiny_audioldm2.path, model_thread)
    assert int8.shape == full.shape and torch.isfinite(int8).all()
    assert (int8 - full).abs().max() <= 0.01 * full.abs().max()  # measured: 0.08%


def test_music_flamingo_int8_language_model_stays_close() -> None:
    """The language model's linear layers in int8: next-token logits within 5% of the float model's range."""
    path = str(music_flamingo_checkpoint(SETTINGS, None).path)
    job = CritiqueJob(prompt="What is vibrato?", clips=[], max_new_tokens=1)
    logits = {}
    for int8 in (False, True):
        model, processor = load_music_flamingo(
            path, torch.device("cpu"), torch.float32, quantization="int8" if int8 else "none"
        )
        engine = MusicFlamingoEngine(model, processor)
        with torch.no_grad():
            logits[int8] = model(**engine.prepare([engine.conversation(job)])).logits[0, -1]
    assert torch.isfinite(logits[True]).all()
    spread = logits[False].max() - logits[False].min()
    assert (logits[True] - logits[False]).abs().max() <= 0.05 * spread


def test_music_flamingo_bitsandbytes_int8_runs_on_a_cpu_and_stays_close() -> None:
    """LLM.int8 on the language model only: greedy tokens come out, next-token logits within 5% of float32's range."""
    path = str(music_flamingo_checkpoint(SETTINGS, None).path)
    placement = place("Music Flamingo", MemoryOptions(quantization="bnb-int8"), torch.bfloat16, **CPU, **ON_CPU)
    job = CritiqueJob(prompt="What is vibrato?", clips=[], max_new_tokens=4)
    logits = {}
    for quantization in ("none", placement.options.quantization):
        model, processor = load_music_flamingo(path, placement.device, torch.float32, quantization=quantization)
        engine = MusicFlamingoEngine(model, processor)
        with torch.no_grad():
            logits[quantization] = model(**engine.prepare([engine.conversation(job)])).logits[0, -1]
    layers = model.model.language_model.layers[0]
    assert type(layers.self_attn.q_proj).__name__ == "Linear8bitLt"
    assert type(model.lm_head) is torch.nn.Linear  # the audio side and lm_head stay in float
    [output] = engine.generate([job])
    assert 1 <= len(output.token_ids) <= 4
    spread = logits["none"].max() - logits["none"].min()
    assert (logits["bnb-int8"].float() - logits["none"]).abs().max() <= 0.05 * spread


@pytest.mark.parametrize("quantization", ["bnb-int8", "nf4"])
def test_bitsandbytes_weights_are_not_offloaded(quantization: str) -> None:
    options = MemoryOptions(quantization=quantization, offload="model")  # type: ignore[arg-type]
    with pytest.raises(UnsupportedMemoryOption, match="stay on the device they were loaded on"):
        place("AudioLDM2", options, torch.float16, cuda=True)


@pytest.mark.parametrize(
    ("options", "cuda", "decoding"),
    [
        (MemoryOptions(decoding="auto"), True, "compiled"),
        (MemoryOptions(decoding="auto"), False, "dynamic"),
        (MemoryOptions(decoding="auto", gpu_memory_gib=10), True, "dynamic"),
        (MemoryOptions(decoding="auto", quantization="bnb-int8"), True, "dynamic"),
        (MemoryOptions(decoding="static"), True, "static"),
    ],
)
def test_auto_decoding_is_compiled_where_the_whole_model_is_on_a_cuda_gpu(
    options: MemoryOptions, cuda: bool, decoding: str
) -> None:
    assert place("Music Flamingo", options, torch.bfloat16, cuda=cuda).options.decoding == decoding


def test_static_and_compiled_kv_caches_give_the_tokens_of_the_dynamic_one(caplog: pytest.LogCaptureFixture) -> None:
    """Greedy, float32: the same tokens alone and in a batch with other jobs (text-only and with a clip). Compiled:
    dynamo alone (backend eager; inductor's code generation is minutes on 2 cores), and after the warm-up no batch
    compiles the decoding step again."""
    path = str(music_flamingo_checkpoint(SETTINGS, None).path)
    clip = np.sin(np.linspace(0, 2000, 16_000 * 3)).astype(np.float32)
    jobs = [
        CritiqueJob(prompt="What is vibrato?", clips=[], max_new_tokens=8),
        CritiqueJob(prompt="Describe this take.", clips=[clip], max_new_tokens=6),
        CritiqueJob(prompt="And its tempo? " * 40, clips=[], max_new_tokens=9),
    ]
    placement = place("Music Flamingo", MemoryOptions(decoding="static"), torch.bfloat16, **CPU)
    with caplog.at_level(logging.INFO, logger="bentoml.audio_studio"):
        log_model_choice("Music Flamingo", music_flamingo_checkpoint(SETTINGS, None), placement)
    assert "weights=none decoding=static" in caplog.text
    model, processor = load_music_flamingo(path, placement.device, torch.float32)
    tokens = {}
    torch._dynamo.reset()
    for decoding in ("dynamic", "static", "compiled"):
        engine = MusicFlamingoEngine(model, processor, decoding=decoding, compile_backend="eager")
        assert (engine.warm_up() > 0) == (decoding == "compiled")
        warmed = counters["stats"]["unique_graphs"]
        alone = [engine.generate([job])[0].token_ids for job in jobs]
        together = [output.token_ids for output in engine.generate(jobs)]
        pairs = [output.token_ids for output in engine.generate(jobs[1:])]
        assert counters["stats"]["unique_graphs"] == warmed, f"{decoding}: a batch compiled the decoding step again"
        assert together == alone and pairs == alone[1:]
        tokens[decoding] = alone
    torch._dynamo.reset()
    assert tokens["static"] == tokens["dynamic"] == tokens["compiled"] and all(tokens["static"])


def test_a_split_placement_is_named_in_the_start_up_line_and_runs_unquantized() -> None:
    placement = place("Music Flamingo", MemoryOptions(gpu_memory_gib=10.5), torch.bfloat16, cuda=True)
    assert placement.describe().endswith("weights=none gpu_memory=10.5GiB+cpu")
    with pytest.raises(UnsupportedMemoryOption, match="runs unquantized and uncompiled"):
        place("Music Flamingo", MemoryOptions(gpu_memory_gib=10, quantization="int8"), torch.bfloat16, cuda=True)


def test_int8_with_sequential_offload_is_refused() -> None:
    options = MemoryOptions(quantization="int8", offload="sequential")
    with pytest.raises(UnsupportedMemoryOption, match="do not combine"):
        place("AudioLDM2", options, torch.float16, cuda=True)


def test_a_runner_asked_for_what_it_cannot_run_does_not_start(serve_env: dict[str, str], tmp_path: Path) -> None:
    env = {**serve_env, "AUDIO_STUDIO_AUDIOLDM2_OFFLOAD": "model"}
    runner = Served("runners.audioldm2:AudioLDM2Runner", env, tmp_path / "runner.log").start()
    try:
        deadline = time.monotonic() + 120
        assert runner.process is not None
        while runner.process.poll() is None and "there is no GPU" not in runner.log_tail():
            assert time.monotonic() < deadline, runner.log_tail()
            time.sleep(0.5)
        assert "AudioLDM2: offload=model moves weights between GPU and CPU memory, and there is no GPU" in (
            runner.log_tail()
        )
    finally:
        runner.stop()
