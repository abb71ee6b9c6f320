"""metrics.json keeps every epoch, also after the best checkpoint is restored for testing."""

from callbacks.metrics_json import MetricsJSON


def test_restoring_an_earlier_checkpoint_keeps_later_epochs(tmp_path):
    callback = MetricsJSON(str(tmp_path))
    callback.history = [{"epoch": e, "val/mean_distance_mm": 10.0 - e} for e in range(5)]
    saved_at_epoch_1 = {"history": [{"epoch": e, "val/mean_distance_mm": 99.0} for e in range(2)]}
    callback.load_state_dict(saved_at_epoch_1)
    assert [r["epoch"] for r in callback.history] == [0, 1, 2, 3, 4]
    assert callback.history[0]["val/mean_distance_mm"] == 10.0  # this process's rows win


def test_resuming_from_a_checkpoint_restores_the_history(tmp_path, toy_model):
    """A fresh callback (as in the process that resumes) takes the history from the checkpoint and goes on."""
    import json

    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from test_mica_module import FaceBatches, make_module

    data = DataLoader(FaceBatches(toy_model, n=4), batch_size=2)

    def fit(max_epochs: int, ckpt_path=None) -> None:
        checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
        trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, callbacks=[MetricsJSON(str(tmp_path)), checkpoints])
        trainer.fit(make_module(toy_model, freeze="all"), data, data, ckpt_path=ckpt_path)

    fit(2)
    first = json.loads((tmp_path / "metrics.json").read_text())["history"]
    fit(3, ckpt_path=tmp_path / "checkpoints" / "last.ckpt")
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert history[:2] == first


def test_each_row_holds_its_own_epochs_training_and_validation_metrics(tmp_path, toy_model):
    import json

    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from test_mica_module import FaceBatches, make_module

    data = DataLoader(FaceBatches(toy_model, n=4), batch_size=2)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         callbacks=[MetricsJSON(str(tmp_path))], enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(make_module(toy_model, freeze="all"), data, data)
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [0, 1]
    assert all("train/loss_epoch" in row and "val/mean_distance_mm" in row for row in history)
    # the last row carries the last epoch's training loss, not the one before
    assert history[-1]["train/loss_epoch"] == float(trainer.callback_metrics["train/loss_epoch"])
    assert history[0]["train/loss_epoch"] != history[1]["train/loss_epoch"]
