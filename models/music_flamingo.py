"""Music Flamingo inference: load a checkpoint, batch critique jobs through one `generate` call.

One engine serves both published layouts (`nvidia/music-flamingo-hf` is an
`AudioFlamingo3ForConditionalGeneration`, `nvidia/music-flamingo-2601-hf` a
`MusicFlamingoForConditionalGeneration`); which one is read from the saved
config, never from a table of model ids.

What the stock processor / `generate` do not give, and this module adds:

* several clips in one conversation (a performance and its reference): the
  processors refuse anything but one clip per text (`validate_inputs`), while
  the model handles any number of audio spans per row (compat/transformers_many_clips.py);
* batch invariance on the CPU: a job's tokens are bit-for-bit what it gets
  alone, whatever else is in its batch (see CPU_PROMPT_MULTIPLE and
  CPU_ROW_MULTIPLE);
* per-job sampling: every sampled job draws from its own seeded generator with
  its own temperature / top-p, so one `generate` call serves greedy and sampled
  jobs of any settings, and a sampled job is reproducible from its seed alone;
* per-job token budgets, so jobs with different `max_new_tokens` share a call.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
import transformers
from torch import nn
from transformers import (
    AutoConfig,
    BitsAndBytesConfig,
    GenerationMixin,
    LogitsProcessor,
    LogitsProcessorList,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from compat.transformers_compile_config import decoding_compile_config
from compat.transformers_many_clips import many_clips_processor_class
from models.constrained import ConstrainedRows, GrammarBook, SchemaError, row_constraints
from models.memory import bitsandbytes_options, quantize_linear_weights
from models.phases import phase, record

MAX_CLIPS = 2  # performance, optional reference
UNQUANTIZED_MODULES = ["audio_tower", "multi_modal_projector", "lm_head"]  # see models/memory.py
BITSANDBYTES_ON_CPU = ("bnb-int8",)  # transformers' LLM.int8 runs on a CPU; NF4 does not here
CPU_MEMORY_GIB = 1024  # what a split placement may put in CPU memory: the host's own limit decides
REPLACEMENT_CHARACTER = "\ufffd"  # what decoding shows for the bytes of a character not yet complete
MIN_CLIP_SECONDS = 0.1  # under 30 ms a clip encodes to zero audio tokens and breaks the model's span bookkeeping

# Measured on this project's CPU (torch 2.13, fp32), see tests/unit/test_music_flamingo_engine.py:
# * PyTorch's CPU SDPA kernel walks the keys in blocks of 512, so a row's attention is bit-identical
#   under two amounts of left padding only when they differ by a multiple of 512. Prompts are padded
#   to a multiple of this many tokens, alone or batched, which guarantees that.
# * fp32 GEMMs compute rows in blocks of 4 and 1-3 leftover rows with other kernels. While decoding,
#   every GEMM has one row per sequence, so each linear layer runs on a multiple of this many rows
#   (copies of the first row, dropped again; see `pad_linear_rows`). Throwaway rows in the batch would
#   do the same but cost a whole prefill each (minutes for a 20-minute clip).
# With both, hidden states, logits and tokens of a job do not depend on its batch.
CPU_PROMPT_MULTIPLE = 512
# A static KV cache holds a power of two of tokens, at least this many: the compiled decoding step then meets a
# handful of cache lengths (each one CUDA graph per batch size), for at most twice the attention reads.
STATIC_CACHE_MIN_TOKENS = 256
WARM_UP_STEPS = 3  # decoding steps per warm-up call: the compile happens at the first
CPU_ROW_MULTIPLE = 4


class FieldError(ValueError):
    """A job the engine refuses because of one request field (named, so the client is told which)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Turn:
    """One earlier or final turn of a conversation: its role, its text, and how many of the job's clips (taken in
    order) it carries."""

    role: Literal["user", "assistant"]
    text: str
    clips: int = 0


@dataclass(frozen=True, eq=False)  # eq on numpy arrays raises; jobs compare by identity
class CritiqueJob:
    """One conversation: optional text and 0-2 clips (mono float32 at the engine's sample rate)."""

    prompt: str | None
    clips: list[np.ndarray]
    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    job_id: str = ""  # the caller's name for the job (the runner cancels by it)
    json_schema: str | None = None  # decode under this JSON schema's grammar (models/constrained.py); None: free text
    turns: tuple[Turn, ...] = ()  # a conversation (see `conversation`); empty: one user turn of `clips` and `prompt`
    stop: tuple[str, ...] = ()  # the runner ends the row once its text holds one of these


@dataclass(frozen=True)
class CritiqueOutput:
    """What the model answered for one job; token counts are the job's own (no padding, no other jobs)."""

    text: str
    tokens_generated: int  # new tokens, the end-of-turn token included when it came
    prompt_tokens: int  # chat template + audio placeholders, without padding
    token_ids: tuple[int, ...] = ()  # the `tokens_generated` new token ids, for exact comparisons
    non_finite: bool = False  # sampling met NaN/Inf probabilities; the row was ended there
    grammar_broken: bool = False  # the grammar refused a token the row took: never expected, reported, not served
    closed_early: bool = False  # structured row: its budget reached the reserve and the JSON was closed early
    stopped: bool = False  # ended early by the caller's `stopped` (a stop string, a cancel), not by itself


# ---- loading -------------------------------------------------------------------


def model_class_for(config: PretrainedConfig) -> type[PreTrainedModel]:
    """The generation class the saved config names (`architectures`), else the one its `model_type` maps to."""
    for name in config.architectures or []:
        candidate = getattr(transformers, name, None)
        if (
            isinstance(candidate, type)
            and issubclass(candidate, PreTrainedModel)
            and issubclass(candidate, GenerationMixin)
            and isinstance(config, candidate.config_class)
        ):
            return candidate
    try:
        return MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        raise ValueError(f"no audio-text generation model for model_type {config.model_type!r}") from None


def load_music_flamingo(
    path: str,
    device: torch.device,
    dtype: torch.dtype,
    attention: str = "sdpa",
    quantization: str = "none",
    gpu_memory_gib: float = 0.0,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load model and processor from a checkpoint folder; the classes come from its saved config.

    `quantization`: the language model's linear layers in int8 or 4 bits (models/memory.py says which and why);
    bitsandbytes quantizes while loading, straight onto `device`. `gpu_memory_gib` > 0: accelerate places the
    modules on GPU 0 up to that much and the rest in CPU memory, moved to the GPU as each runs.
    """
    config = AutoConfig.from_pretrained(path)
    bitsandbytes = bitsandbytes_options(quantization, dtype)
    at_load: dict[str, Any] = {}
    if bitsandbytes:
        at_load = {
            "quantization_config": BitsAndBytesConfig(**bitsandbytes, llm_int8_skip_modules=UNQUANTIZED_MODULES),
            "device_map": {"": str(device)},
        }
    elif gpu_memory_gib:
        at_load = {"device_map": "auto", "max_memory": {0: f"{gpu_memory_gib}GiB", "cpu": f"{CPU_MEMORY_GIB}GiB"}}
    model = model_class_for(config).from_pretrained(
        path, config=config, dtype=dtype, attn_implementation=attention, **at_load
    )
    if quantization == "int8":
        quantize_linear_weights(model.model.language_model)
    if not at_load:
        model = model.to(device)
    processor = many_clips_processor_class(PROCESSOR_MAPPING[type(config)]).from_pretrained(path)
    return model.eval(), processor


# ---- generation helpers -----------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    seed: int


class PerRowSampler(LogitsProcessor):
    """Sample each sampled row with its own settings and generator; leave greedy rows alone.

    The chosen token is the only finite score left in its row, so `generate`'s
    greedy step picks it. Warpers are transformers' own, in `generate`'s order
    (temperature, top-k, top-p); top-k comes from the checkpoint's generation
    config, as with `generate(do_sample=True)`. Draws use CPU generators, so a
    seed gives the same tokens on any device and in any batch. A row whose
    probabilities are not finite is ended with `end_token` and remembered in
    `failed`: one job's bad numbers never raise inside the shared call.
    """

    def __init__(self, rows: list[Sampling | None], top_k: int | None, end_token: int) -> None:
        self.rows = rows
        self.generators = [None if row is None else torch.Generator("cpu").manual_seed(row.seed) for row in rows]
        self.top_k = TopKLogitsWarper(top_k) if top_k else None
        self.end_token = end_token
        self.failed: set[int] = set()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        for i, (row, generator) in enumerate(zip(self.rows, self.generators, strict=True)):
            if row is None or generator is None:
                continue
            ids, logits = input_ids[i : i + 1], scores[i : i + 1].float()
            logits = TemperatureLogitsWarper(row.temperature)(ids, logits)
            if self.top_k is not None:
                logits = self.top_k(ids, logits)
            if row.top_p < 1.0:
                logits = TopPLogitsWarper(row.top_p)(ids, logits)
            probs = torch.softmax(logits, dim=-1).cpu()
            if i in self.failed or not bool(torch.isfinite(probs).all()):
                self.failed.add(i)
                token = self.end_token
            else:
                token = int(torch.multinomial(probs[0], 1, generator=generator))
            scores[i] = -math.inf
            scores[i, token] = 0.0
        return scores


Stopped = Callable[[torch.Tensor], list[bool]]  # given the new tokens so far (rows x steps, on the model's device)


class RowsStopped(StoppingCriteria):
    """Once per decoding step: show `stopped` the new tokens so far (a view, not a copy: it reads them to the host
    only when it wants their text) and finish the rows it names (their client is gone); when every row is
    finished, `generate` ends."""

    def __init__(self, stopped: Stopped, prompt_length: int, device: torch.device) -> None:
        self.stopped, self.prompt_length, self.device = stopped, prompt_length, device
        self.ended_at: dict[int, int] = {}  # row -> its new tokens when it was first named: what follows is padding

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        names = self.stopped(input_ids[:, self.prompt_length :])
        for row, named in enumerate(names):
            if named:
                self.ended_at.setdefault(row, input_ids.shape[1] - self.prompt_length)
        return torch.tensor(names, device=self.device)


class PerRowBudget(StoppingCriteria):
    """Finish each row after its own number of new tokens (`generate` pads finished rows)."""

    def __init__(self, prompt_length: int, budgets: list[int], device: torch.device) -> None:
        self.limits = torch.tensor([prompt_length + b for b in budgets], device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return input_ids.shape[1] >= self.limits


class FirstTokenClock(StoppingCriteria):
    """Notes when the first new token is scored: prefill (the whole prompt, audio included) ends there."""

    def __init__(self) -> None:
        self.first_token_ns: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        if self.first_token_ns is None:
            self.first_token_ns = time.time_ns()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _row_padded_linear(linear: nn.Linear, multiple: int, x: torch.Tensor) -> torch.Tensor:
    forward = type(linear).forward  # the class's own: F.linear, or a quantized layer's kernel
    rows = x.numel() // x.shape[-1]
    missing = -rows % multiple
    if missing == 0:
        return forward(linear, x)
    flat = x.reshape(rows, x.shape[-1])
    padded = torch.cat([flat, flat[:1].expand(missing, -1)])
    return forward(linear, padded)[:rows].reshape(*x.shape[:-1], -1)


def pad_linear_rows(model: nn.Module, multiple: int) -> None:
    """Make every linear layer of `model` compute on a multiple of `multiple` rows (see CPU_ROW_MULTIPLE).

    Replaces `forward` on the instances only: weights, state dict and outputs
    are unchanged, except that a row no longer depends on how many rows share
    its GEMM. Prefill GEMMs (batch x padded prompt rows) are multiples already.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear) and not getattr(module, "_row_multiple", None):
            module.forward = functools.partial(_row_padded_linear, module, multiple)
            module._row_multiple = multiple


# ---- engine ------------------------------------------------------------------


def static_cache_tokens(tokens: int) -> int:
    """The length of a static KV cache that holds `tokens`: a power of two, at least STATIC_CACHE_MIN_TOKENS."""
    return max(STATIC_CACHE_MIN_TOKENS, 1 << (tokens - 1).bit_length())


class MusicFlamingoEngine:
    """Critique jobs through a loaded Music Flamingo model (either class) and its processor.

    `batch_invariant` (CPU only; on accelerators it changes nothing) pads
    prompts to a multiple of CPU_PROMPT_MULTIPLE tokens and GEMMs to a multiple
    of CPU_ROW_MULTIPLE rows, so a job's output never depends on its batch. The
    price is paid by long prompts: a padded prompt takes SDPA's masked path
    instead of the causal one (measured on the tiny model, one 1200 s clip:
    18 s / 5.3 GB peak RSS instead of 5 s / 1.2 GB; 30 s clips: no difference).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        batch_invariant: bool = True,
        decoding: str = "dynamic",
        compile_backend: str = "inductor",
    ) -> None:
        """`decoding`: the KV cache grown token by token (`dynamic`), preallocated (`static`), or preallocated
        with the decoding step compiled by transformers (`compiled`; CUDA graphs on CUDA, and `warm_up` compiles
        it before the first job). `compile_backend`: inductor to serve; `eager` runs dynamo alone (tests)."""
        self.model = model
        self.decoding = decoding
        self.processor = processor
        self.device = model.device
        self.dtype = model.dtype
        graphs = "reduce-overhead" if self.device.type == "cuda" else "default"
        self.compile_config = (
            decoding_compile_config(compile_backend, graphs if compile_backend == "inductor" else None)
            if decoding == "compiled"
            else None
        )
        aligned = batch_invariant and self.device.type == "cpu"
        self.prompt_multiple: int | None = CPU_PROMPT_MULTIPLE if aligned else None
        self.row_multiple = CPU_ROW_MULTIPLE if aligned else 1
        if aligned:
            pad_linear_rows(model, CPU_ROW_MULTIPLE)
        extractor = processor.feature_extractor
        self.sample_rate: int = extractor.sampling_rate
        self.max_audio_seconds: float = float(processor.max_audio_len)
        self.window_samples: int = int(extractor.chunk_length * extractor.sampling_rate)
        # The processor hears a clip in windows of `chunk_length` seconds, each `nb_max_frames` mel frames that its
        # encoder at least halves: more audio tokens than this per window cannot come.
        self.window_tokens_at_most: int = extractor.nb_max_frames // 2
        eos = model.generation_config.eos_token_id
        self.eos_token_ids: set[int] = set() if eos is None else set(eos) if isinstance(eos, list) else {eos}
        self.pad_token_id: int = processor.tokenizer.pad_token_id
        self.end_token: int = min(self.eos_token_ids) if self.eos_token_ids else self.pad_token_id

    @functools.cached_property
    def grammars(self) -> GrammarBook:
        """Structured rows' grammars for this tokenizer, built at the first structured job."""
        vocab_size = self.model.config.get_text_config().vocab_size
        return GrammarBook(self.processor.tokenizer, vocab_size, sorted(self.eos_token_ids) or [self.end_token])

    def group_key(self, job: CritiqueJob) -> tuple[()]:
        """Jobs with equal keys may share one `generate` call: here every job can.

        Sampling settings, seeds and token budgets are all applied per row (see
        PerRowSampler, PerRowBudget), and rows do not affect each other, so no
        knob forces a separate call.
        """
        return ()

    def check(self, job: CritiqueJob) -> None:
        """Reject what the model cannot take, before it spoils a whole batch."""
        if not (job.prompt and job.prompt.strip()) and not job.clips and not job.turns:
            raise ValueError("a job needs a prompt, a clip, or both")
        if job.turns and (sum(t.clips for t in job.turns) != len(job.clips) or job.turns[-1].role != "user"):
            raise ValueError("a conversation's turns must carry every clip and end with the user's")
        if len(job.clips) > MAX_CLIPS:
            raise ValueError(f"at most {MAX_CLIPS} clips per job, got {len(job.clips)}")
        for clip in job.clips:
            if clip.ndim != 1 or clip.shape[0] < MIN_CLIP_SECONDS * self.sample_rate:
                raise ValueError(f"clips must be mono and at least {MIN_CLIP_SECONDS} s long, got shape {clip.shape}")
        if job.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if job.do_sample and not (job.temperature > 0 and 0 < job.top_p <= 1):
            raise ValueError("sampling needs temperature > 0 and 0 < top_p <= 1")
        try:
            reserve = self.grammars.grammar(job.json_schema).reserve if job.json_schema is not None else 0
        except SchemaError as exc:
            raise FieldError("json_schema", str(exc)) from None
        if job.json_schema is not None and job.max_new_tokens <= reserve:
            raise FieldError(
                "max_new_tokens",
                f"structured output needs max_new_tokens of at least {reserve + 1} with this model's tokenizer "
                f"({reserve} are kept to close the JSON); got {job.max_new_tokens}",
            )

    @staticmethod
    def conversation(job: CritiqueJob) -> list[dict[str, Any]]:
        """The chat template's messages: each turn a `<sound>` part per clip it carries, then its text (if any).

        Without `turns`, one user turn of every clip and the prompt; the checkpoint's own system prompt stays.
        """
        turns = job.turns or (Turn("user", job.prompt or "", len(job.clips)),)
        clips = iter(job.clips)
        messages = []
        for turn in turns:
            content: list[dict[str, Any]] = [
                {"type": "audio", "audio": np.asarray(next(clips), dtype=np.float32)} for _ in range(turn.clips)
            ]
            if turn.text.strip():
                content.append({"type": "text", "text": turn.text})
            messages.append({"role": turn.role, "content": content})
        return messages

    def process(self, conversations: list[list[dict[str, Any]]], pad_to_multiple_of: int | None) -> dict[str, Any]:
        """Template, tokenize (left padding) and extract audio features, on the CPU.

        `sanitize_control_tokens` keeps special tokens typed by a user (`<sound>`,
        `<|im_end|>`) as plain text.
        """
        text_kwargs = {"pad_to_multiple_of": pad_to_multiple_of} if pad_to_multiple_of else {}
        return self.processor.apply_chat_template(
            conversations,
            tokenize=True,
            add_generation_prompt=True,
            return_dict=True,
            sanitize_control_tokens=True,
            processor_kwargs={"text_kwargs": text_kwargs},
        )

    def prepare(self, conversations: list[list[dict[str, Any]]]) -> dict[str, torch.Tensor]:
        """Model inputs for a batch of conversations, on the model's device and dtype."""
        return dict(self.process(conversations, self.prompt_multiple).to(self.device, dtype=self.dtype))

    def count_prompt_tokens(self, job: CritiqueJob) -> int:
        """Tokens of the job's prompt (template, text, audio spans), as `CritiqueOutput.prompt_tokens` reports.

        Runs the processor, audio features included (about 0.7 s for a
        20-minute clip on two CPU cores) but not the model: exact, where an
        estimate from clip lengths would copy the processor's windowing.
        """
        self.check(job)
        return int(self.process([self.conversation(job)], None)["attention_mask"].sum())

    def prompt_tokens_at_most(self, job: CritiqueJob) -> int:
        """An upper bound on `count_prompt_tokens` that extracts no audio features (for a 30 s clip the exact count
        costs ~15 ms): the conversation's text tokenized alone, and each clip at most its windows' audio tokens
        plus its markers."""
        text_only = [
            {"role": message["role"], "content": [part for part in message["content"] if part["type"] == "text"]}
            for message in self.conversation(job)
        ]
        text = self.processor.apply_chat_template(
            [text_only], tokenize=True, add_generation_prompt=True, return_dict=True, sanitize_control_tokens=True
        )
        windows = sum(-(-len(clip) // self.window_samples) for clip in job.clips)
        return int(text["attention_mask"].sum()) + windows * self.window_tokens_at_most + len(job.clips) * 16

    @torch.no_grad()
    def generate(self, jobs: list[CritiqueJob], stopped: Stopped | None = None) -> list[CritiqueOutput]:
        """Answer all `jobs` with one `generate` call; each job gets only its own new tokens.

        `stopped` sees the new tokens at every step and names, per job, the rows to finish early.
        """
        for job in jobs:
            self.check(job)
        with phase("prepare", rows=len(jobs)) as prepared:
            inputs = self.prepare([self.conversation(job) for job in jobs])
            prepared["prompt_tokens"] = inputs["input_ids"].shape[1]
        prompt_length = inputs["input_ids"].shape[1]
        budgets = [job.max_new_tokens for job in jobs]
        sampling = [Sampling(j.temperature, j.top_p, j.seed) if j.do_sample else None for j in jobs]
        logits_processor = LogitsProcessorList()
        schemas = [job.json_schema for job in jobs]
        constraints = row_constraints(self.grammars, schemas, budgets) if any(schemas) else [None] * len(jobs)
        if any(constraints):
            logits_processor.append(ConstrainedRows(self.grammars, constraints, prompt_length))
        sampler = PerRowSampler(sampling, self.model.generation_config.top_k, self.end_token)
        if any(sampling):
            logits_processor.append(sampler)
        clock = FirstTokenClock()
        stopping = StoppingCriteriaList([clock, PerRowBudget(prompt_length, budgets, self.device)])
        ended = RowsStopped(stopped or (lambda tokens: [False] * len(jobs)), prompt_length, self.device)
        if stopped is not None:
            stopping.append(ended)
        started = time.time_ns()
        cache: dict[str, Any] = {}
        room = max(budgets)
        if self.decoding != "dynamic":  # the cache's length is the prompt's and the new tokens' (generate's max_length)
            cache = {"cache_implementation": "static", "compile_config": self.compile_config}
            room = static_cache_tokens(prompt_length + room) - prompt_length  # rows still end at their budgets
        sequences = self.model.generate(
            **inputs,
            **cache,
            disable_compile=self.compile_config is None,
            max_new_tokens=room,
            do_sample=False,
            logits_processor=logits_processor,
            stopping_criteria=stopping,
            pad_token_id=self.pad_token_id,
        )
        new_tokens = sequences[:, prompt_length:].cpu()
        prompt_tokens = inputs["attention_mask"].sum(-1).cpu()
        first_token = clock.first_token_ns or time.time_ns()
        record("prefill", started, first_token, rows=len(jobs), prompt_tokens=prompt_length)
        record("decode", first_token, time.time_ns(), rows=len(jobs), new_tokens=new_tokens.shape[1])
        outputs = []
        for i, (job, row) in enumerate(zip(jobs, constraints, strict=True)):
            tokens = self.own_tokens(
                new_tokens[i, : min(job.max_new_tokens, ended.ended_at.get(i, new_tokens.shape[1]))].tolist()
            )
            outputs.append(
                CritiqueOutput(
                    text=self.decode(tokens),
                    tokens_generated=len(tokens),
                    prompt_tokens=int(prompt_tokens[i]),
                    token_ids=tuple(tokens),
                    non_finite=i in sampler.failed,
                    grammar_broken=bool(row and row.broken),
                    closed_early=bool(row and row.closing),
                    stopped=i in ended.ended_at,
                )
            )
        return outputs

    def warm_up(self) -> float:
        """Compile the decoding step before the first job (compiled decoding); the seconds it took (0 otherwise).

        The step is compiled with dynamic shapes, so batch size and cache length are symbols; what dynamo still
        specialises on is a batch of one row and, on a CPU, the rows missing to the row multiple of the batch
        invariant linear layers. So: 1 to `row_multiple + 1` rows, at the two shortest cache lengths; after that
        no batch compiles again (tests/test_compiled_decoding.py)."""
        if self.compile_config is None:
            return 0.0
        started = time.perf_counter()
        job = CritiqueJob("warm-up", [], max_new_tokens=1)
        prompt = self.prepare([self.conversation(job)])["input_ids"].shape[1]
        shortest = static_cache_tokens(prompt + 1)

        def after_a_few_steps(tokens: torch.Tensor) -> list[bool]:
            return [tokens.shape[1] >= WARM_UP_STEPS] * tokens.shape[0]

        for cache in (shortest, 2 * shortest):
            for rows in range(1, self.row_multiple + 2):
                self.generate([replace(job, max_new_tokens=cache - prompt)] * rows, after_a_few_steps)
        return time.perf_counter() - started

    def decode(self, tokens: list[int]) -> str:
        """A row's text: its own tokens, special tokens (the end of turn) left out."""
        return self.processor.tokenizer.decode(tokens, skip_special_tokens=True)

    def text_so_far(self, tokens: list[int], budget: int) -> tuple[str, int]:
        """The text of a row still being decoded and how many of its own tokens it holds: decoded as its final
        text is, so the text is a prefix of the final text, less a trailing character whose bytes have not all
        come yet (byte-level BPE splits characters across tokens; the tokenizer shows a partial one as U+FFFD).
        `tokens`: the row's new tokens so far, padding included; `budget`: its max_new_tokens."""
        own = self.own_tokens(tokens[:budget])
        return self.decode(own).rstrip(REPLACEMENT_CHARACTER), len(own)

    def own_tokens(self, tokens: list[int]) -> list[int]:
        """A row's tokens up to and including its first end token; what follows is padding."""
        for position, token in enumerate(tokens):
            if token in self.eos_token_ids:
                return tokens[: position + 1]
        return tokens
