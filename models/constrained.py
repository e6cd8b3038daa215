"""JSON-schema-constrained decoding, per row of a shared `generate` call (xgrammar).

Each constrained row gets its own grammar matcher; its logits are masked to
the tokens the grammar allows, so the text always parses. Free-text rows in
the same batch are untouched. A mask depends only on the row's own tokens,
so batch invariance is kept.

A grammar alone cannot promise the JSON ends inside the token budget: a row
that runs out mid-string would leave an unclosed object. So every row keeps
a reserve: when its remaining budget falls to `JsonGrammar.reserve`, it is
closed by the shortest path the grammar allows (closing strings and arrays,
writing the remaining required keys with minimal values), chosen from the
mask alone, never from the logits. The reserve bounds the closing cost of any
state: the root's cost from the start (every required key still to write),
plus the largest list item's (the one that may be open), plus slack
for the unfinished token.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xgrammar
from transformers import LogitsProcessor, PreTrainedTokenizerBase

GRAMMARS_KEPT = 64  # compiled grammars kept per tokenizer: the structured critique's few and callers' own schemas
CLOSING_SLACK_TOKENS = 16  # an unfinished key, enum value, number or multi-byte character
MAX_CLOSING_TOKENS = 4096  # a grammar that cannot close within this is refused at compile time


class SchemaError(ValueError):
    """A JSON schema that cannot be decoded under: xgrammar cannot compile it, or it cannot be closed in time."""


@dataclass(frozen=True)
class JsonGrammar:
    compiled: xgrammar.CompiledGrammar
    reserve: int  # tokens kept to close the JSON; the smallest budget a job may have is reserve + 1


@dataclass
class RowConstraint:
    """One constrained row: its matcher, budget, and whether a token was ever refused (a bug, never expected)."""

    matcher: xgrammar.GrammarMatcher
    budget: int
    reserve: int
    broken: bool = False
    closing: bool = False  # the reserve was reached: the row is being closed


class GrammarBook:
    """Grammars for one tokenizer: compiled once per schema and kept, with the closing policy's token order."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int, stop_token_ids: list[int]) -> None:
        self.info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids
        )
        self.compiler = xgrammar.GrammarCompiler(self.info, cache_enabled=True)
        self.vocab_size = vocab_size
        self.control = control_tokens(self.info.decoded_vocab, vocab_size)
        self.closing_order = np.where(self.control.numpy(), np.inf, closing_order(self.info.decoded_vocab, vocab_size))

    @functools.lru_cache(maxsize=GRAMMARS_KEPT)  # noqa: B019  (one book per engine, kept for the process's life)
    def grammar(self, schema: str) -> JsonGrammar:
        """The schema's grammar and its closing reserve."""
        compiled = self.compile(schema)
        parsed = json.loads(schema)
        definitions = parsed.get("$defs", {})
        items = [
            self.closing_cost(self.compile(json.dumps({**item, "$defs": definitions})))
            for item in list_items(parsed, definitions)
        ]
        reserve = self.closing_cost(compiled) + max(items, default=0) + CLOSING_SLACK_TOKENS
        return JsonGrammar(compiled, reserve=reserve)

    def compile(self, schema: str) -> xgrammar.CompiledGrammar:
        """Compact separators and no free whitespace: the fewest tokens per document."""
        try:
            return self.compiler.compile_json_schema(schema, any_whitespace=False, strict_mode=True)
        except (RuntimeError, ValueError, TypeError) as exc:  # xgrammar's own words name the unsupported feature
            raise SchemaError(f"the JSON schema cannot be compiled: {str(exc).splitlines()[0][:300]}") from None

    def closing_cost(self, compiled: xgrammar.CompiledGrammar) -> int:
        """Tokens the closing policy takes to write the grammar's smallest document from the start."""
        cost = self.close(xgrammar.GrammarMatcher(compiled), MAX_CLOSING_TOKENS)
        if cost is None:
            raise SchemaError(f"the JSON schema cannot be closed within {MAX_CLOSING_TOKENS} tokens")
        return cost

    def close(self, matcher: xgrammar.GrammarMatcher, limit: int) -> int | None:
        """Walk `matcher` to the end of its grammar by the closing policy; the tokens it took (None: over limit)."""
        bitmask = xgrammar.allocate_token_bitmask(1, self.vocab_size)
        for taken in range(limit + 1):
            if matcher.is_completed():
                return taken
            matcher.fill_next_token_bitmask(bitmask, 0)
            matcher.accept_token(self.closing_token(bitmask[0]))
        return None

    def closing_token(self, bitmask_row: torch.Tensor) -> int:
        """Of the allowed tokens, the one that closes soonest: quotes and brackets, then commas, then the longest."""
        allowed = np.unpackbits(bitmask_row.numpy().view(np.uint8), bitorder="little")[: self.vocab_size]
        return int(np.where(allowed.astype(bool), self.closing_order, np.inf).argmin())


def list_items(schema: Any, definitions: dict[str, Any]) -> list[dict[str, Any]]:
    """The schemas of list items, inline or `"items": {"$ref": "#/$defs/Name"}`, each once: a row may stop inside one,
    and closing it costs what writing the smallest such item does."""
    found: dict[str, dict[str, Any]] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            items = node.get("items")
            if isinstance(items, dict):
                reference = items.get("$ref", "")
                item = definitions.get(reference.removeprefix("#/$defs/"), {}) if reference else items
                found.setdefault(json.dumps(item, sort_keys=True), item)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return list(found.values())


def control_tokens(decoded_vocab: list[bytes], vocab_size: int) -> torch.Tensor:
    """Tokens holding a control character (U+0000 to U+001F). xgrammar's string rule lets them into JSON strings,
    where JSON forbids them raw (strict parsers refuse the document); compact JSON has no other place for them."""
    control = torch.zeros(vocab_size, dtype=torch.bool)
    for token_id, text in enumerate(decoded_vocab[:vocab_size]):
        control[token_id] = any(byte < 0x20 for byte in text)
    return control


def closing_order(decoded_vocab: list[bytes], vocab_size: int) -> np.ndarray:
    """A rank per token id for the closing policy (lower first); ties go to the longer token, then the lower id.

    Tokens starting with `"`, `]` or `}` end a string or a container; `,` moves to the next required key; among
    the rest the longest token writes a forced key, enum value or number in the fewest steps.
    """
    rank = np.full(vocab_size, np.inf)
    for token_id, text in enumerate(decoded_vocab[:vocab_size]):
        if not text:
            continue
        group = 0 if text[:1] in (b'"', b"]", b"}") else 1 if text[:1] == b"," else 2
        rank[token_id] = group * 1e6 - len(text) * 1e3 + token_id * 1e-3
    return rank


class ConstrainedRows(LogitsProcessor):
    """Mask each constrained row to its grammar; close it by the closing policy when its reserve is reached.

    `rows[i]` is None for a free-text row. Must run before any sampling warper, so sampled rows draw from
    allowed tokens only. A closed grammar allows only the stop tokens, so the row ends there.
    """

    def __init__(self, book: GrammarBook, rows: list[RowConstraint | None], prompt_length: int) -> None:
        self.book = book
        self.rows = rows
        self.prompt_length = prompt_length
        self.bitmask = xgrammar.allocate_token_bitmask(len(rows), book.vocab_size)
        self.control_ids = book.control.nonzero().flatten()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        written = input_ids.shape[1] - self.prompt_length
        masked: list[int] = []
        for i, row in enumerate(self.rows):
            if row is None or row.broken or written >= row.budget:
                continue
            if written and not row.matcher.is_terminated() and not row.matcher.accept_token(int(input_ids[i, -1])):
                row.broken = True
                continue
            if row.matcher.is_terminated():
                continue
            row.matcher.fill_next_token_bitmask(self.bitmask, i)
            row.closing = row.closing or row.budget - written <= row.reserve
            if row.closing:
                token = self.book.closing_token(self.bitmask[i])
                scores[i] = -torch.inf
                scores[i, token] = 0.0
            else:
                masked.append(i)
        if masked:
            xgrammar.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), indices=masked)
            rows = torch.tensor(masked, device=scores.device)
            scores[rows.unsqueeze(1), self.control_ids.to(scores.device)] = -torch.inf
        return scores


def row_constraints(book: GrammarBook, schemas: list[str | None], budgets: list[int]) -> list[RowConstraint | None]:
    rows: list[RowConstraint | None] = []
    for schema, budget in zip(schemas, budgets, strict=True):
        if schema is None:
            rows.append(None)
            continue
        grammar = book.grammar(schema)
        rows.append(RowConstraint(xgrammar.GrammarMatcher(grammar.compiled), budget, grammar.reserve))
    return rows
