"""Chat with a GST model: multi-turn history, and replies that may contain camera or image segments.

Format (``gst.model.sequences.build_chat_example``, the one the chat layout trains on): each message is
``[role] content [end]``; a user turn's content is its images (image segments, in order) followed by its
text; ``[assistant]`` then prompts the reply. History is kept as the exact ids the model read or wrote.

Decoding (``decode_reply``): text tokens and ``<|end|>`` may be sampled, and, with segments allowed,
``<|img_start|>`` / ``<|cam_start|>``. A started segment is completed with codes of its kind only (known
length, grid positions as in training, heads restricted to that kind) and closed by its end token; the
reply then holds the segment decoded: an image (3, h_px, w_px), or a camera as a ``PoseEstimate``
relative to the observed image ("turned 35 degrees left, moved 0.8 m forward").
``gst.model.generate_text`` masks codes out of text decoding, so it cannot write segments; text steps
here sample exactly as it does. A ``constraint`` (such as ``NumberFormat``) further narrows each text
step to the ids that keep the reply a prefix of an allowed string.

Number tokens (a vocabulary with ``numbers``, ``gst.tokenizers.numbers``): they are text ids, so prompts,
replies and scored candidates read them through the text tokenizer (``TextTokenizer.encode`` writes each
number with a unit as one token, ``decode`` writes it back with its unit's decimals), text decoding may
sample them, and ``next_logprobs`` reads the model's distribution over them directly.

Glossary: T tokens, N new tokens, L reply prefix tokens, V' text and special rows.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from gst.api_types import ChatHost, ChatReply, ImageInput, PreparedImage
from gst.model import GSTModel, HeadKind, SamplingConfig, SequenceConfig
from gst.model.sampling import sample_logits
from gst.model.sequences import NO_GRID, ImageSegment, build_chat_example, grid_coords

SCORE_CHUNK = 32  # candidate replies scored in one batch over a shared prompt cache (ChatSession.score)
# (reply ids so far) -> (image_offset,) bool mask of the ids allowed next (text ids and <|end|>)
ReplyConstraint = Callable[[list[int]], torch.Tensor]
# (question, the images it is about) -> the answer text, or None to let the model reply
# (gst.eval.qa_reader.ChatRouter: the answer reader, for the questions its answer forms recognise)
ChatRouter = Callable[[str, Sequence[ImageInput]], "str | None"]


class ChatSession:
    """A multi-turn chat (format and decoding in the module docstring); ``GST.start_chat`` makes one."""

    def __init__(
        self,
        gst: ChatHost,
        *,
        system: str | None,
        max_new_tokens: int,
        sampling: SamplingConfig,
        seed: int,
        allow_segments: bool,
        router: ChatRouter | None = None,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.gst, self.max_new_tokens, self.sampling = gst, max_new_tokens, sampling
        self.allow_segments, self.router = allow_segments, router
        self._images: list[PreparedImage] = []  # the last turn's images that had any (for the router)
        self._generator = gst.generator(seed)
        self._system = [] if system is None else [self._message("system", [system])]
        self._turns: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _message(self, role: str, parts: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """One message's (ids (T,), grid (T, 2)); parts are strings or prepared image id rows."""
        converted = [
            self.gst.text_tokenizer.encode(p)
            if isinstance(p, str)
            else ImageSegment((p - self.gst.layout.image_offset).reshape(-1).cpu())
            for p in parts
        ]
        ids, _, grid = build_chat_example(self.gst.layout, self.gst.sequence, [(role, converted)])
        return ids, grid

    @property
    def num_tokens(self) -> int:
        return sum(int(ids.shape[0]) for ids, _ in self._system + self._turns)

    def reset(self) -> None:
        """Forget every turn (the system message stays)."""
        self._turns, self._images = [], []

    def _prompt(self, text: str, images: Sequence[ImageInput]):
        """The user turn (ids, grid) and the whole prompt up to ``[assistant]``: ids (T,), grid (T, 2)."""
        # errors name unreadable files; an image already prepared (GST.prepare) is not tokenized again
        prepared = [(img if isinstance(img, PreparedImage) else self.gst.prepare(img)).ids for img in images]
        user = self._message("user", [*prepared, text])
        start = torch.tensor([self.gst.layout.special_id("<|assistant|>")])
        chunks = self._system + self._turns + [user]
        prompt = torch.cat([c[0] for c in chunks] + [start])
        grid = torch.cat([c[1] for c in chunks] + [torch.full((1, 2), NO_GRID)])
        return user, prompt, grid

    @torch.no_grad()
    def score(
        self, text: str, images: Sequence[ImageInput], candidates: Sequence[str], *, complete: bool = True
    ) -> list[float]:
        """Log-likelihood (nats) of each candidate reply, its text then ``<|end|>``, to a user turn;
        ``complete=False`` scores the text alone, as the start of a reply. The history is left
        unchanged. Each step is scored under the distribution text decoding samples from (text ids and
        ``<|end|>``), so the best-scoring candidate is the reply decoding would most likely write among
        them: multiple-choice answered by likelihood, as lm-evaluation-harness does."""
        if not candidates:
            raise ValueError("score: no candidate replies given")
        _, prompt, grid = self._prompt(text, images)
        layout, device = self.gst.layout, self.gst.model.device
        end = layout.special_id("<|end|>")
        replies = [self.gst.text_tokenizer.encode(c) + [end] * complete for c in candidates]
        if not all(replies):
            raise ValueError("score: an empty candidate scores nothing without <|end|> (complete=False)")
        longest = max(len(r) for r in replies)
        if prompt.shape[0] + longest > self._max_positions():
            length = prompt.shape[0] + longest
            raise ValueError(f"score: prompt and reply take {length} tokens; the model reads fewer")
        logp = _reply_logp(layout, device)

        # The prompt is read once, with the token prefix every candidate shares (a box's coordinates
        # chosen so far): its log-likelihood is counted once for all. A copy of that KV cache is shared
        # by a chunk of candidates at a time (a number grid has ~130): memory stays at SCORE_CHUNK
        # copies of it. Right padding needs no attention mask: a causal model's earlier positions never
        # see it.
        shared = _common_prefix(replies)
        prefix = torch.tensor(replies[0][:shared], dtype=torch.long)  # (S,)
        head = torch.cat([prompt, prefix]), torch.cat([grid, torch.full((shared, 2), NO_GRID)])
        out = self.gst.model(head[0][None].to(device), head[1][None].to(device), use_cache=True)
        head_logp = logp(out.logits[0, prompt.shape[0] - 1 :])  # (S + 1, V'): the shared tokens, then
        start = float(head_logp[torch.arange(shared, device=device), prefix.to(device)].sum())
        first = head_logp[-1]  # (V',): the first token after the shared prefix
        replies = [reply[shared:] for reply in replies]
        scores = []
        for lo in range(0, len(replies), SCORE_CHUNK):
            chunk = replies[lo : lo + SCORE_CHUNK]
            part = [start + float(first[reply[0]]) for reply in chunk]
            width = max(len(r) for r in chunk)
            if width > 1:
                ids = torch.full((len(chunk), width - 1), end, dtype=torch.long)  # (n, L - 1): inputs
                for i, reply in enumerate(chunk):
                    ids[i, : len(reply) - 1] = torch.tensor(reply[:-1])
                cache = copy.deepcopy(out.past_key_values)  # the next chunk reads the prompt's own
                cache.batch_repeat_interleave(len(chunk))
                cells = torch.full((len(chunk), width - 1, 2), NO_GRID)  # replies are text
                rest = self.gst.model(ids.to(device), cells.to(device), past_key_values=cache, use_cache=True)
                steps = logp(rest.logits)  # (n, L - 1, V'): step j predicts reply token j + 1
                for i, reply in enumerate(chunk):
                    at = torch.arange(len(reply) - 1, device=device)
                    part[i] += float(steps[i, at, torch.tensor(reply[1:], device=device)].sum())
            scores += part
        return scores

    @torch.no_grad()
    def next_logprobs(
        self, text: str, images: Sequence[ImageInput], reply_ids: Sequence[int]
    ) -> torch.Tensor:
        """The distribution of each next reply token to a user turn, after every prefix of the reply
        ``reply_ids``: row j is log p(reply token j | the prompt, reply tokens < j), over the rows text
        decoding samples from (``score``'s). One forward; the history is left unchanged.
        Shapes: reply_ids (L,) -> (L + 1, V') float32 on the model's device, -inf outside text and
        ``<|end|>``."""
        _, prompt, grid = self._prompt(text, images)
        reply = torch.as_tensor(list(reply_ids), dtype=torch.long)  # (L,)
        if prompt.shape[0] + reply.shape[0] > self._max_positions():
            raise ValueError(
                f"next_logprobs: {prompt.shape[0] + reply.shape[0]} tokens; the model reads fewer"
            )
        ids = torch.cat([prompt, reply])  # (T + L,)
        cells = torch.cat([grid, torch.full((reply.shape[0], 2), NO_GRID)])  # (T + L, 2)
        device = self.gst.model.device
        out = self.gst.model(ids[None].to(device), cells[None].to(device))
        return _reply_logp(self.gst.layout, device)(out.logits[0, prompt.shape[0] - 1 :])  # (L + 1, V')

    def ask(
        self, text: str, images: Sequence[ImageInput] = (), *, constraint: ReplyConstraint | None = None
    ) -> ChatReply:
        """Add a user turn (images, then text), decode the reply, keep both in the history.
        ``constraint``: only replies it allows (e.g. ``NumberFormat``); segments are then never started.
        With a ``router`` (and no constraint), a question it answers (about this turn's images, else the
        last images given) is answered by it: the reply is its text, kept in the history as a text turn."""
        # each image tokenized once, for the router and the prompt (errors name unreadable files)
        images = [img if isinstance(img, PreparedImage) else self.gst.prepare(img) for img in images]
        self._images = images or self._images
        answer = None if self.router is None or constraint is not None else self.router(text, self._images)
        if answer is not None:
            user, _, _ = self._prompt(text, images)
            start, end = (self.gst.layout.special_id(t) for t in ("<|assistant|>", "<|end|>"))
            new_ids = torch.tensor([*self.gst.text_tokenizer.encode(answer), end])
            turn_ids = torch.cat([torch.tensor([start]), new_ids])
            self._turns += [user, (turn_ids, torch.full((turn_ids.shape[0], 2), NO_GRID))]
            return ChatReply([answer], new_ids, True, answered_by="answer-reader")
        user, prompt, grid = self._prompt(text, images)
        start = prompt[-1:]
        limit = self._max_positions()
        seq = self.gst.sequence
        # A segment started on the last allowed step is still completed (its codes and end token).
        overshoot = max(seq.num_image_tokens, seq.num_camera_tokens) + 1 if self.allow_segments else 0
        if prompt.shape[0] + self.max_new_tokens + overshoot > limit:
            raise ValueError(
                f"the conversation is {prompt.shape[0]} tokens and the reply may take "
                f"{self.max_new_tokens}; the model reads at most {limit}: start a new chat (/reset)"
            )
        new_ids, new_grid = decode_reply(
            self.gst.model,
            self.gst.sequence,
            prompt,
            grid,
            self.max_new_tokens,
            self.sampling,
            self._generator,
            self.allow_segments and constraint is None,
            constraint,
        )
        end = self.gst.layout.special_id("<|end|>")
        finished = bool(new_ids.numel()) and int(new_ids[-1]) == end
        turn_ids, turn_grid = torch.cat([start, new_ids]), torch.cat([grid[-1:], new_grid])
        if not finished:  # close the turn so the next one starts cleanly
            turn_ids = torch.cat([turn_ids, torch.tensor([end])])
            turn_grid = torch.cat([turn_grid, torch.full((1, 2), NO_GRID)])
        self._turns += [user, (turn_ids, turn_grid)]
        return ChatReply(self._parts(new_ids), new_ids, finished)

    def _max_positions(self) -> int:
        return int(getattr(self.gst.model.lm.config, "max_position_embeddings", 1 << 30))

    def _parts(self, ids: torch.Tensor) -> list[Any]:
        """Split reply ids into text, decoded cameras and images."""
        layout, seq, gst = self.gst.layout, self.gst.sequence, self.gst
        sid = layout.special_id
        parts: list[Any] = []
        text: list[int] = []
        i, ids_list = 0, ids.tolist()
        while i < len(ids_list):
            t = ids_list[i]
            if t < layout.num_text:
                text.append(t)
                i += 1
                continue
            if text:
                parts.append(gst.text_tokenizer.decode(text))
                text = []
            if t == sid("<|img_start|>"):
                n = seq.num_image_tokens
                parts.append(gst.decode_images(torch.tensor([ids_list[i + 1 : i + 1 + n]]))[0])
                i += n + 2
            elif t == sid("<|cam_start|>"):
                n = seq.num_camera_tokens
                parts.append(gst.decode_cameras(torch.tensor([ids_list[i + 1 : i + 1 + n]]))[0])
                i += n + 2
            else:  # <|end|>
                i += 1
        if text:
            parts.append(gst.text_tokenizer.decode(text))
        return parts


def text_reply_rows(layout: Any, device: torch.device | str) -> torch.Tensor:
    """The rows a text reply may hold, as a mask over text + special rows: text ids (number tokens
    included) and ``<|end|>``. Shapes: -> (image_offset,) bool."""
    allowed = torch.zeros(layout.image_offset, dtype=torch.bool, device=device)
    allowed[: layout.num_text] = True
    allowed[layout.special_id("<|end|>")] = True
    return allowed


def _reply_logp(layout: Any, device: torch.device | str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logits -> log-probabilities over what text decoding samples (``text_reply_rows``).
    Shapes: (..., V) -> (..., V') float32."""
    allowed = text_reply_rows(layout, device)

    def logp(logits: torch.Tensor) -> torch.Tensor:
        return logits[..., : layout.image_offset].float().masked_fill(~allowed, float("-inf")).log_softmax(-1)

    return logp


@torch.no_grad()
def decode_reply(
    model: GSTModel,
    seq: SequenceConfig,
    prompt: torch.Tensor,
    grid: torch.Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig,
    generator: torch.Generator,
    allow_segments: bool,
    constraint: ReplyConstraint | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KV-cache decoding of one reply (module docstring), stopping after ``<|end|>`` or ``max_new_tokens``
    (a started segment is finished). Shapes: prompt (T,), grid (T, 2) -> new ids (N,), their grid (N, 2)."""
    layout, device = model.layout, model.device
    sid = layout.special_id
    allowed = text_reply_rows(layout, device)
    segments = {
        sid("<|img_start|>"): (HeadKind.IMAGE, grid_coords(*seq.image_grid), sid("<|img_end|>")),
        sid("<|cam_start|>"): (HeadKind.CAMERA, grid_coords(*seq.camera_grid), sid("<|cam_end|>")),
    }
    if allow_segments:
        allowed[list(segments)] = True
    none = torch.full((1, 2), NO_GRID)
    out = model(prompt[None].to(device), grid[None].to(device), use_cache=True, head=HeadKind.FULL)
    pos, new_ids, new_grid = int(prompt.shape[0]), [], []

    def feed(tokens: list[int], cells: torch.Tensor, head: HeadKind) -> None:
        nonlocal out, pos
        out = model(
            torch.tensor([tokens], device=device),
            cells[None].to(device),
            position_ids=torch.arange(pos, pos + len(tokens), device=device)[None],
            past_key_values=out.past_key_values,
            use_cache=True,
            head=head,
        )
        pos += len(tokens)
        new_ids.extend(tokens)
        new_grid.append(cells)

    while len(new_ids) < max_new_tokens:
        mask = allowed if constraint is None else allowed & constraint(new_ids).to(device)
        logits = out.logits[:, : layout.image_offset].masked_fill(~mask, float("-inf"))  # (1, text+special)
        token = int(sample_logits(logits, sampling, generator)[0])
        if token == sid("<|end|>"):
            new_ids.append(token)
            new_grid.append(none)
            break
        if token not in segments:
            feed([token], none, HeadKind.FULL)
            continue
        kind, cells, close = segments[token]  # a started segment is always completed
        feed([token], none, kind)
        offset = layout.kind_rows(kind)[0]
        for i in range(cells.shape[0]):
            code = int(sample_logits(out.logits, sampling, generator)[0]) + offset
            last = i + 1 == cells.shape[0]
            feed(
                [code, close] if last else [code],
                torch.cat([cells[i : i + 1], none]) if last else cells[i : i + 1],
                HeadKind.FULL if last else kind,
            )
    return torch.tensor(new_ids, dtype=torch.long), torch.cat(new_grid) if new_grid else torch.zeros(0, 2)


class NumberFormat:
    """A ``ReplyConstraint`` for one number as ``gst.data.qa_types`` writes it: 1-3 integer digits, exactly
    ``decimals`` decimals (none: no point), a space, ``unit``, then ``<|end|>`` (e.g. "3.85 m", "122 deg").

    Each step allows the text ids whose piece keeps the decoded reply a prefix of that format (any text
    tokenizer: pieces are decoded once), and ``<|end|>`` once the number is complete. Greedy decoding under
    it writes the most likely allowed token at each step: always a well-formed answer, however the
    question is phrased (LLMI3D: numbers as free text are error-prone). With number tokens, each one's
    piece is its value with ``decimals`` decimals, so "3.84" then " m" is a reply it allows."""

    def __init__(self, text_tokenizer: Any, layout: Any, unit: str, decimals: int) -> None:
        if decimals < 0 or not unit or not re.fullmatch(r"[A-Za-z]+", unit):
            raise ValueError(f"NumberFormat: need decimals >= 0 and a unit of letters: {decimals}, {unit!r}")
        self.tokenizer, self.layout, self.decimals = text_tokenizer, layout, decimals
        self.pieces = [self._decode([i]) for i in range(layout.num_text)]
        number = r"\d{1,3}" + (rf"\.\d{{{decimals}}}" if decimals else "")
        unit_prefixes = "|".join(re.escape(unit[:k]) for k in range(len(unit) + 1))
        partial = [r"\d{0,3}", rf"{number} (?:{unit_prefixes})"]
        if decimals:
            partial.append(rf"\d{{1,3}}\.\d{{0,{decimals}}}")
        self._partial = re.compile("|".join(f"(?:{p})" for p in partial))
        self._complete = re.compile(rf"{number} {re.escape(unit)}")

    def is_prefix(self, text: str) -> bool:
        return self._partial.fullmatch(text) is not None

    def is_complete(self, text: str) -> bool:
        return self._complete.fullmatch(text) is not None

    def __call__(self, new_ids: list[int]) -> torch.Tensor:
        text = self._decode([i for i in new_ids if i < self.layout.num_text])
        mask = torch.zeros(self.layout.image_offset, dtype=torch.bool)
        for i, piece in enumerate(self.pieces):
            if piece and self.is_prefix(text + piece):
                mask[i] = True
        if self.is_complete(text):
            mask[self.layout.special_id("<|end|>")] = True
        return mask

    def _decode(self, ids: list[int]) -> str:
        if getattr(self.tokenizer, "numbers", None) is None:
            return self.tokenizer.decode(ids)
        return self.tokenizer.decode(ids, decimals=self.decimals)  # a number token in this format


def _common_prefix(replies: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all replies share, leaving each at least one token of its own."""
    n = min(len(r) for r in replies) - 1
    first = replies[0]
    for k in range(n):
        if any(r[k] != first[k] for r in replies[1:]):
            return k
    return max(n, 0)


__all__ = ["ChatSession", "NumberFormat", "ReplyConstraint", "decode_reply", "text_reply_rows"]
