"""How well does a teacher continue a student's own prefixes? (docs/results/xkd_rev2/, docs/results/testbed_v2/)

On-policy distillation trains the student on the teacher's next-token
distributions *at the student's own prefixes*. A teacher trained only on gold
solutions may be no guide there. For each test problem this samples (or
greedily decodes) the student's output, cuts it after a fraction f of its
tokens, lets the teacher finish greedily, and scores the final answer:

    accuracy(f) = P(correct | student prefix of fraction f, teacher continues)

f = 0 is the teacher alone; f = 1 is the student alone. Split by whether the
student's own full output was right, this shows whether the teacher repairs
the student's mistakes (wrong → right) or inherits them: the repair rate is
accuracy(0.5) on the problems the student got wrong. "Right" is the task's
exact correctness: the final answer for arith, any listed rendering for lingua.

    python scripts/teacher_on_student_prefixes.py --teacher T_DIR --student S_DIR [--task arith|lingua]
        [--experiment testbed_arith] [--split validation|test] [--examples 300] [--temperature 1.0] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from distill.data.collate import Encoded, collate_prompts, encode
from distill.data.tasks import TaskSpec, format_examples, load_split
from distill.metrics.gsm8k import is_correct
from distill.models.generation import cut_at_eos
from distill.models.load import load_model
from distill.models.sampling import decode

FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _task(name: str, examples: int, experiment: str | None = None, overrides: tuple[str, ...] = ()) -> TaskSpec:
    """The task as a run composes it: conf/task/NAME.yaml, with an experiment preset's overrides when named (a
    testbed's sizes and generator knobs: without them the data would be another task's)."""
    from dataclasses import replace

    from hydra import compose, initialize_config_dir

    from distill import config as C

    C.register_resolvers()
    chosen = [f"task={name}"] + ([f"experiment={experiment}"] if experiment else []) + list(overrides)
    with initialize_config_dir(config_dir=C.config_dir(), version_base="1.3"):
        task = C.task_spec(compose("train", overrides=chosen))
    return replace(task, max_eval_examples=examples)


def _correct(task: TaskSpec, text: str, record: dict) -> bool:
    if task.references_field:  # exact match with any correct rendering
        return " ".join(text.split()) in {" ".join(r.split()) for r in record[task.references_field]}
    return is_correct(text, record[task.target_field])


def _prompts(items, tokenizer):
    return collate_prompts(items, tokenizer.pad_token_id, False)


@torch.no_grad()
def _continue(teacher, tokenizer, items, prefixes, max_new_tokens):
    """The teacher's greedy continuation of prompt + prefix, returned as full texts (prefix included)."""
    extended = [Encoded(item.prompt_ids + prefix, []) for item, prefix in zip(items, prefixes)]
    new = decode(teacher, _prompts(extended, tokenizer), max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id)
    rows = cut_at_eos(new, tokenizer.eos_token_id)
    return [tokenizer.decode(prefix + row, skip_special_tokens=True) for prefix, row in zip(prefixes, rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=None, help="student sampling temperature (default greedy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", default="arith", help="a conf/task name with a generated data set")
    parser.add_argument("--experiment", default=None, help="a conf/experiment preset whose task settings apply "
                        "(testbed_arith, testbed_lingua)")
    parser.add_argument("--split", default="test", choices=("validation", "test"))
    parser.add_argument("--out", default=None, help="also write the result to this JSON file")
    parser.add_argument("overrides", nargs="*", help="config overrides as `distill train` takes them (the study's "
                        "EXTRA): only the task's settings matter here")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    task = _task(args.task, args.examples, args.experiment, tuple(args.overrides))
    teacher, tokenizer = load_model(args.teacher)
    student, _ = load_model(args.student)
    teacher.eval(), student.eval()
    records = load_split(task, args.split)
    items = encode(tokenizer, format_examples(task, records, False), task.max_source_length, task.max_target_length)
    budget = task.decoding["max_new_tokens"]
    with torch.no_grad():
        new = decode(student, _prompts(items, tokenizer), budget, tokenizer.eos_token_id, tokenizer.pad_token_id,
                     args.temperature)
    outputs = [row[:-1] if row and row[-1] == tokenizer.eos_token_id else row
               for row in cut_at_eos(new, tokenizer.eos_token_id)]
    student_right = [_correct(task, tokenizer.decode(o, skip_special_tokens=True), r) for o, r in zip(outputs, records)]
    result = {"task": args.task, "experiment": args.experiment, "split": args.split, "examples": len(items), "student_temperature": args.temperature,
              "student_accuracy": 100.0 * sum(student_right) / len(items), "by_fraction": {}}
    for fraction in FRACTIONS:
        prefixes = [o[: int(round(fraction * len(o)))] for o in outputs]
        texts = _continue(teacher, tokenizer, items, prefixes, budget) if fraction < 1.0 else \
            [tokenizer.decode(o, skip_special_tokens=True) for o in outputs]
        right = [_correct(task, t, r) for t, r in zip(texts, records)]
        wrong_idx = [i for i, ok in enumerate(student_right) if not ok]
        right_idx = [i for i, ok in enumerate(student_right) if ok]
        result["by_fraction"][fraction] = {
            "accuracy": 100.0 * sum(right) / len(items),
            "on_student_wrong": 100.0 * sum(right[i] for i in wrong_idx) / max(len(wrong_idx), 1),
            "on_student_right": 100.0 * sum(right[i] for i in right_idx) / max(len(right_idx), 1)}
    result["repair_rate"] = result["by_fraction"][0.5]["on_student_wrong"]
    print(json.dumps(result, indent=1))
    if args.out:
        from distill.io import atomic_write_json

        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
