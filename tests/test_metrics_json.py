"""metrics.json keeps every epoch, also after the best checkpoint is restored for testing."""

from callbacks.metrics_json import MetricsJSON


def test_restoring_an_earlier_checkpoint_keeps_later_epochs(tmp_path):
    callback = MetricsJSON(str(tmp_path))
    callback.history = [{"epoch": e, "val/mean_distance_mm": 10.0 - e} for e in range(5)]
    saved_at_epoch_1 = {"history": [{"epoch": e, "val/mean_distance_mm": 99.0} for e in range(2)]}
    callback.load_state_dict(saved_at_epoch_1)
    assert [r["epoch"] for r in callback.history] == [0, 1, 2, 3, 4]
    assert callback.history[0]["val/mean_distance_mm"] == 10.0  # this process's rows win


def test_resuming_in_a_new_process_restores_the_history(tmp_path):
    callback = MetricsJSON(str(tmp_path))
    callback.load_state_dict({"history": [{"epoch": 0, "train/loss": 3.0}, {"epoch": 1, "train/loss": 2.0}]})
    assert callback.history == [{"epoch": 0, "train/loss": 3.0}, {"epoch": 1, "train/loss": 2.0}]
