"""How `distill` hands overrides to Hydra."""

from distill.cli import _quote_paths


def test_path_values_holding_equals_are_quoted_and_nothing_else_is():
    args = ["ckpt=out/sweep/sft-arith-tiny/seed=0,lr=0.1", "hydra.run.dir=a/b=c", "ckpt=run1/final,run2/final",
            "trainer.lr=0.1", "ckpt='already=quoted'", "cache_dir=${oc.env:X}/a=b", "seed=0"]
    assert _quote_paths(args) == ["ckpt='out/sweep/sft-arith-tiny/seed=0,lr=0.1'", "hydra.run.dir='a/b=c'",
                                  "ckpt=run1/final,run2/final", "trainer.lr=0.1", "ckpt='already=quoted'",
                                  "cache_dir=${oc.env:X}/a=b", "seed=0"]
