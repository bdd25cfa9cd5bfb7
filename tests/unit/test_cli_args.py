"""How `distill` hands overrides to Hydra; the accelerate configs it ships."""

import pytest

from distill.cli import _quote_paths, main


def test_path_values_holding_equals_are_quoted_and_nothing_else_is():
    args = ["ckpt=out/sweep/sft-arith-tiny/seed=0,lr=0.1", "hydra.run.dir=a/b=c", "ckpt=run1/final,run2/final",
            "trainer.lr=0.1", "ckpt='already=quoted'", "cache_dir=${oc.env:X}/a=b", "seed=0"]
    assert _quote_paths(args) == ["ckpt='out/sweep/sft-arith-tiny/seed=0,lr=0.1'", "hydra.run.dir='a/b=c'",
                                  "ckpt=run1/final,run2/final", "trainer.lr=0.1", "ckpt='already=quoted'",
                                  "cache_dir=${oc.env:X}/a=b", "seed=0"]


def test_accelerate_configs_are_shipped_and_load_in_accelerate(capsys):
    accelerate_config = pytest.importorskip("accelerate.commands.config.config_args")
    assert main(["accelerate-config"]) == 0
    names = capsys.readouterr().out.split()
    assert {"single_device", "ddp", "fsdp2", "cpu_ddp"} <= set(names)
    for name in names:
        assert main(["accelerate-config", name]) == 0
        path = capsys.readouterr().out.strip()
        config = accelerate_config.load_config_from_file(path)
        assert config.num_processes >= 1, name
        assert (config.distributed_type == "FSDP" and config.fsdp_config["fsdp_version"] == 2) == (name == "fsdp2")


@pytest.mark.parametrize("name, fragment", [("zero3", "DeepSpeed ZERO3 does not compose"),
                                            ("nope", "no accelerate config named 'nope'")])
def test_accelerate_config_refusals_are_one_line(name, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["accelerate-config", name])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1
