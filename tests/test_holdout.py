"""`python -m training.holdout`: one drive out of training, as the val split of a new folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import find_pairs, read_pair
from training.holdout import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "camvid"


def test_the_held_out_sequence_becomes_val_and_leaves_train(tmp_path, capsys):
    output = tmp_path / "holdout"
    assert main(["--data-dir", str(FIXTURES), "--sequence", "0006R0", "--output-dir", str(output)]) == 0
    assert "train 3 frames, val 1 frames of 0006R0" in capsys.readouterr().out

    train, val = find_pairs(output, "train"), find_pairs(output, "val")
    assert [pair.stem for pair in val] == ["0006R0_f00990"]
    assert [pair.stem for pair in train] == ["0001TP_006690", "0016E5_00660", "0016E5_05280"]
    image, labels = read_pair(val[0])  # the links lead to the original pair, image and label alike
    original_image, original_labels = read_pair(find_pairs(FIXTURES, "train")[1])
    assert (image == original_image).all() and (labels == original_labels).all()

    # Run again for another drive: the folder is replaced, not mixed.
    assert main(["--data-dir", str(FIXTURES), "--sequence", "0001TP", "--output-dir", str(output)]) == 0
    assert [pair.stem for pair in find_pairs(output, "val")] == ["0001TP_006690"]
    assert len(find_pairs(output, "train")) == 3


def test_an_unknown_sequence_names_the_ones_there_are(tmp_path, capsys):
    assert main(["--data-dir", str(FIXTURES), "--sequence", "Seq05VD", "--output-dir", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert "No frame of sequence 'Seq05VD' in" in error and "'0001TP', '0006R0', '0016E5'" in error
    assert not (tmp_path / "x").exists()


def test_val_frames_can_be_pooled_into_training_and_still_leave_the_held_out_drive_unseen(tmp_path, capsys):
    output = tmp_path / "holdout"
    argv = ["--data-dir", str(FIXTURES), "--sequence", "0006R0", "--output-dir", str(output)]
    assert main(argv + ["--from-splits", "train", "val"]) == 0
    assert "train 5 frames, val 1 frames of 0006R0" in capsys.readouterr().out
    assert [pair.stem for pair in find_pairs(output, "train")] == [
        "0001TP_006690", "0016E5_00660", "0016E5_05280", "0016E5_07959", "0016E5_08137"]
    assert [pair.stem for pair in find_pairs(output, "val")] == ["0006R0_f00990"]

    # Holding out the val drive takes its frames from both splits.
    assert main(["--data-dir", str(FIXTURES), "--sequence", "0016E5", "--output-dir", str(output),
                 "--from-splits", "train", "val"]) == 0
    assert [pair.stem for pair in find_pairs(output, "val")] == [
        "0016E5_00660", "0016E5_05280", "0016E5_07959", "0016E5_08137"]
    assert [pair.stem for pair in find_pairs(output, "train")] == ["0001TP_006690", "0006R0_f00990"]


def test_a_frame_in_two_pooled_splits_is_refused(tmp_path, capsys):
    assert main(["--data-dir", str(FIXTURES), "--sequence", "0006R0", "--output-dir", str(tmp_path / "x"),
                 "--from-splits", "train", "train"]) == 2
    assert "Frame '0001TP_006690' is in more than one of the splits" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_camvid_class_becomes_the_plain_layout_of_your_own_data(tmp_path, capsys):
    """--target-class writes images/ + masks/ (0/255) and val/images + val/masks: the pedestrian worked example."""
    output = tmp_path / "pedestrians"
    assert main(["--data-dir", str(FIXTURES), "--sequence", "0006R0", "--output-dir", str(output),
                 "--target-class", "pedestrian"]) == 0
    assert "train 3 frames, val 1 frames of 0006R0" in capsys.readouterr().out
    assert sorted(path.name for path in (output / "val" / "masks").iterdir()) == ["0006R0_f00990.png"]
    assert [pair.stem for pair in find_pairs(output, "train")] == ["0001TP_006690", "0016E5_00660", "0016E5_05280"]

    for pair in find_pairs(output, "train") + find_pairs(output, "val"):
        original = {p.stem: p for split in ("train", "val") for p in find_pairs(FIXTURES, split)}[pair.stem]
        _, labels = read_pair(original)
        mask = np.asarray(Image.open(pair.label))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert ((mask == 255) == (labels == 9)).all()  # CamVid's pedestrian is 9, nothing else is marked


def test_a_class_that_camvid_does_not_have_is_refused(tmp_path, capsys):
    argv = ["--data-dir", str(FIXTURES), "--sequence", "0006R0", "--output-dir", str(tmp_path / "x")]
    for bad in ("dog", "12"):
        with pytest.raises(SystemExit):
            main(argv + ["--target-class", bad])
        assert "--target-class" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
