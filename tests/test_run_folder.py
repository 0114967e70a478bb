import pytest

from nucseg.errors import EngineError
from nucseg.run_folder import RUN_FILES, check_run_folder, plan_differences, write_history


def test_write_history_takes_the_union_of_columns(tmp_path):
    path = write_history([{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5, "val": 0.3}],
                         tmp_path / "h.csv")  # fmt: skip
    assert path.read_text().splitlines() == ["epoch,loss,val", "1,1.0,", "2,0.5,0.3"]


def test_plan_differences_name_each_field_and_skip_what_was_not_stored():
    stored = {"lr": 0.001, "seed": 0, "data.train": "a"}
    assert plan_differences(stored, {"lr": 0.002, "seed": 0, "data.train": "a", "new": 1}) == [
        "lr: 0.001 in the checkpoint, 0.002 now"
    ]
    assert plan_differences(stored, stored) == []


@pytest.mark.parametrize("name", RUN_FILES)
def test_any_run_file_claims_the_folder(tmp_path, name):
    assert check_run_folder(tmp_path, resume=False, overwrite=False) is False  # empty: free
    (tmp_path / name).write_text("")
    with pytest.raises(EngineError, match=f"already holds a run \\({name}\\)"):
        check_run_folder(tmp_path, resume=False, overwrite=False)
    assert check_run_folder(tmp_path, resume=False, overwrite=True) is False
    if name == "last.pt":
        assert check_run_folder(tmp_path, resume=True, overwrite=False) is True
    else:  # resuming a folder without last.pt would mix two runs
        with pytest.raises(EngineError, match="holds no last.pt to resume from"):
            check_run_folder(tmp_path, resume=True, overwrite=False)
