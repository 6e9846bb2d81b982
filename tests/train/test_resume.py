"""``--resume``: a run interrupted after an epoch continues from it (weights, optimizer, RNG, log,
early-stopping state) and ends where an uninterrupted run ends."""

from __future__ import annotations

import json

import pytest
import torch

from emzoo.errors import UsageError
from emzoo.train.runfiles import read_csv
from emzoo.train.trainer import train


class Interrupt(Exception):
    pass


def _stop_after(epoch: int):
    def callback(e, row):
        if e == epoch:
            raise Interrupt

    return callback


def test_resume_continues_after_the_last_completed_epoch(membrane, tiny_data, tmp_path):
    params = {**membrane.tiny_params, "epochs": 3, "patience": 0}
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(membrane, tiny_data, run, overrides=params, progress=False, on_epoch_end=_stop_after(1))
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "interrupted" and config["epochs_completed"] == 1
    state = torch.load(run / "weights" / "latest.pt", weights_only=True)
    assert state["epoch"] == 1
    assert state["optimizer"]["state"][0]["step"].item() == 1  # Adam took one step
    first_row = read_csv(run / "log.csv")[0]

    result = train(membrane, None, run, resume=True, progress=False)  # --data comes from config.json
    assert result.epochs_completed == 3
    rows = read_csv(run / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]  # continued, not restarted
    assert rows[0] == first_row
    state = torch.load(run / "weights" / "latest.pt", weights_only=True)
    assert state["epoch"] == 3 and state["optimizer"]["state"][0]["step"].item() == 3
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "finished" and len(config["resumed"]) == 1

    # the interrupted-and-resumed run trains exactly like an uninterrupted one
    straight = train(membrane, tiny_data, tmp_path / "straight", overrides=params, progress=False)
    assert straight.epochs_completed == 3
    a = torch.load(run / "weights" / "latest.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "straight" / "weights" / "latest.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    log_a = [r["train_loss"] for r in read_csv(run / "log.csv")]
    log_b = [r["train_loss"] for r in read_csv(tmp_path / "straight" / "log.csv")]
    assert log_a == log_b


def test_resume_with_more_epochs_and_with_changed_parameters(membrane, tiny_data, tmp_path):
    run = tmp_path / "run"
    train(membrane, tiny_data, run, overrides=membrane.tiny_params, epochs=1, progress=False)
    with pytest.raises(UsageError, match=r"cannot change lr 0.001 -> 0.01"):
        train(membrane, tiny_data, run, overrides=["lr=0.01"], resume=True, epochs=2, progress=False)
    result = train(membrane, tiny_data, run, resume=True, epochs=2, progress=False)
    assert result.epochs_completed == 2
    assert len(read_csv(run / "log.csv")) == 2
    again = train(membrane, tiny_data, run, resume=True, progress=False)  # nothing left to do
    assert again.epochs_completed == 2 and len(read_csv(run / "log.csv")) == 2
