"""The method contract: what the trainer asks of a method, each member documented once
(docs/design.md, Methods).

Every method class subclasses ``Method`` for the optional hooks' defaults; no method inherits from another. A
subclass that leaves out a required member is refused when its class is defined, so a new method fails at import,
not in the middle of a run. The trainer calls exactly these members, and nothing else:

required
    needs_teacher      bool (class attribute): the run loads a teacher and ``ctx.teacher`` is set.
    prompts_only       bool (attribute or property): learns from prompts alone (no dataset targets), so the
                       task's unlabelled prompts join the training set.
    trajectories(items, ctx) -> batch dict
                       the outputs to learn from for one micro-batch (collated, generated, teacher logits), run
                       under ``torch.no_grad``. Batch keys with a meaning to the trainer: ``SUM_PREFIX`` entries
                       are summed over the whole optimizer step and handed back under ``WINDOW_PREFIX``;
                       ``LOG_RECORDS`` is a list of per-example records appended to metrics.jsonl.
    loss_terms(batch, ctx) -> distill.losses.terms.LossTerms
                       the per-token terms (with grad) that the trainer reduces over the optimizer step.

optional (defaults here)
    setup(ctx, train_items, progress, used) -> train_items
                       once, before training: replace the training items (the teacher's cached outputs) or
                       create trainable modules in ``ctx.extra_modules`` (seeded from the run's seed).
    single_stream      True for a method that serves one ordered request stream (OSD): one process only,
                       ``examples_per_step`` examples per optimizer step in ``data_order="stream"`` from
                       ``stream_start``, instead of the trainer's batch size and accumulation.
    teacher_decodes    the teacher generates token by token beside the student (MiniLLM's mixture sampling):
                       a sharded teacher is held gathered during ``trajectories``.
    cross_tokenizer    the method can compare a teacher and a student with different tokenizers
                       (``divergence.cross_tokenizer``: aligned positions, matched tokens; ``ctx.cross``).
    reads_teacher_cache
                       the method's teacher distributions are over fixed targets (dataset or cached teacher
                       outputs), so a `distill teacher-cache` can serve them (``teacher.cache``).
    fuses_linear       the method's losses can come from hidden states and output projections (it passes
                       ``ctx.fused_linear`` to ``token_view``/``teacher_forward``); False: it needs full logits
                       and the run never fuses.
    state_dict() / load_state_dict(state)
                       the method's own state that a resumed run needs (OSD's replay buffer), saved in every
                       checkpoint; ``None`` when there is none.
"""

from __future__ import annotations

SUM_PREFIX = "sum/"  # batch entries summed over the optimizer step's micro-batches (and ranks) by the trainer
WINDOW_PREFIX = "window/"  # ... and handed back, to every micro-batch's loss_terms, under this prefix
LOG_RECORDS = "log_records"  # per-example records a method asks the trainer to log (OSD's requests)
DATA_ORDERS = ("shuffled", "stream")

REQUIRED = ("needs_teacher", "prompts_only", "trajectories", "loss_terms")


class Method:
    """Base of every method class: the optional hooks' defaults; see the module docstring for the contract."""

    single_stream: bool = False
    examples_per_step: int | None = None  # single-stream methods only: examples per optimizer step
    data_order: str = "shuffled"
    stream_start: int = 0  # single-stream methods only: the train example the stream begins at
    teacher_decodes: bool = False
    fuses_linear: bool = False
    reads_teacher_cache: bool = False
    cross_tokenizer: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        missing = [name for name in REQUIRED if not any(name in vars(k) for k in cls.__mro__ if k is not Method)]
        if missing:
            raise TypeError(f"method {cls.__name__} does not define {', '.join(missing)} (distill/methods/base.py)")

    def setup(self, ctx, train_items: list, progress: bool, used=None) -> list:
        """No setup: the training items as they are."""
        return train_items

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore (a method with state overrides both)."""
