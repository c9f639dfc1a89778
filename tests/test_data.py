"""Data loading: pairing, CamVid's two layouts and the plain images/ masks/ one, resize rules, binarisation,
the plain folder's val split, and every validation error (`check_dataset`)."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from demo.engine import resize_image, resize_labels
from helpers import plain_folder
from training.data import (BINARY_MASK, DataError, binarize, check_dataset, default_crop_size, find_pairs, load_split,
                           make_dataset, plain_split, plain_split_groups, read_pair)


def copy_split(source, target, split="train", stems=None):
    """Copy some pairs of the fixture into a new SegNet-layout folder."""
    for suffix in ("", "annot"):
        (target / f"{split}{suffix}").mkdir(parents=True, exist_ok=True)
        for path in sorted((source / f"{split}{suffix}").iterdir()):
            if stems is None or path.stem in stems:
                shutil.copy(path, target / f"{split}{suffix}" / path.name)
    return target


def test_pairs_match_by_stem(camvid_dir):
    pairs = find_pairs(camvid_dir, "train")
    assert len(pairs) == 4
    assert all(pair.image.stem == pair.label.stem for pair in pairs)
    assert [pair.stem for pair in pairs] == sorted(pair.stem for pair in pairs)
    assert len(find_pairs(camvid_dir, "val")) == 2


def test_seed_layout_loads_the_same_frames(camvid_dir, tmp_path):
    # The seed's folders, with labels stored as three identical channels as the seed ships them.
    (tmp_path / "images_prepped_train").mkdir()
    (tmp_path / "annotations_prepped_train").mkdir()
    for pair in find_pairs(camvid_dir, "train"):
        shutil.copy(pair.image, tmp_path / "images_prepped_train" / pair.image.name)
        labels = np.asarray(Image.open(pair.label))
        Image.fromarray(np.stack([labels] * 3, axis=-1)).save(tmp_path / "annotations_prepped_train" / pair.label.name)
    seed_images, seed_masks, _ = load_split(tmp_path, "train", (176, 240))
    segnet_images, segnet_masks, _ = load_split(camvid_dir, "train", (176, 240))
    np.testing.assert_array_equal(seed_images, segnet_images)
    np.testing.assert_array_equal(seed_masks, segnet_masks)


def test_missing_split_says_which_layouts_were_expected(tmp_path):
    with pytest.raises(DataError, match="trainannot/.*images_prepped_train"):
        find_pairs(tmp_path, "train")


def test_labels_keep_their_values_after_resizing(camvid_dir):
    for pair in find_pairs(camvid_dir, "train"):
        image, labels = read_pair(pair)
        for size in ((176, 240), (224, 224), (97, 131), (720, 960)):
            resized = resize_labels(labels, size)
            assert resized.shape == size
            assert set(np.unique(resized)) <= set(np.unique(labels))


def test_images_are_resized_with_area_interpolation(camvid_dir):
    image, _ = read_pair(find_pairs(camvid_dir, "val")[0])
    expected = cv2.resize(image, (240, 180), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(resize_image(image, (180, 240)), expected)
    # 2x2 area averaging exactly: a downscale by two is the mean of each block.
    block_mean = image.reshape(180, 2, 240, 2, 3).mean(axis=(1, 3))
    assert np.abs(expected.astype(float) - block_mean).max() <= 0.5 + 1e-9


def test_car_becomes_one_and_everything_else_zero(camvid_dir):
    pair = find_pairs(camvid_dir, "train")[0]
    _, labels = read_pair(pair)
    mask = binarize(labels)
    assert set(np.unique(mask)) <= {0, 1}
    assert mask.sum() == np.count_nonzero(labels == 8) > 0
    assert binarize(labels, target_class=3).sum() == np.count_nonzero(labels == 3)


def test_missing_label_is_named(camvid_dir, tmp_path):
    copy_split(camvid_dir, tmp_path)
    (tmp_path / "trainannot" / "0001TP_006690.png").unlink()
    with pytest.raises(DataError, match=r"0001TP_006690\.png has no label map"):
        find_pairs(tmp_path, "train")


def test_missing_image_is_named(camvid_dir, tmp_path):
    copy_split(camvid_dir, tmp_path)
    (tmp_path / "train" / "0006R0_f00990.png").unlink()
    with pytest.raises(DataError, match=r"trainannot/0006R0_f00990\.png has no image"):
        find_pairs(tmp_path, "train")


def test_unreadable_image_is_named(camvid_dir, tmp_path):
    copy_split(camvid_dir, tmp_path)
    (tmp_path / "train" / "0001TP_006690.png").write_text("not a picture")
    with pytest.raises(DataError, match=r"train/0001TP_006690\.png cannot be read"):
        load_split(tmp_path, "train", None)


def test_unreadable_label_is_named(camvid_dir, tmp_path):
    copy_split(camvid_dir, tmp_path)
    label = tmp_path / "trainannot" / "0001TP_006690.png"
    label.write_bytes(label.read_bytes()[:200])  # truncated
    with pytest.raises(DataError, match=r"trainannot/0001TP_006690\.png cannot be read"):
        load_split(tmp_path, "train", None)


def test_size_mismatch_is_named(camvid_dir, tmp_path):
    copy_split(camvid_dir, tmp_path)
    label = tmp_path / "trainannot" / "0001TP_006690.png"
    Image.open(label).resize((240, 180), Image.NEAREST).save(label)
    with pytest.raises(DataError, match=r"0001TP_006690\.png is 240x180 but its image .* is 480x360"):
        load_split(tmp_path, "train", None)


def test_label_values_out_of_range_are_named(camvid_dir, tmp_path):
    copy_split(camvid_dir, tmp_path)
    label = tmp_path / "trainannot" / "0016E5_00660.png"
    values = np.asarray(Image.open(label)).copy()
    values[0, :3] = [12, 200, 255]
    Image.fromarray(values).save(label)
    with pytest.raises(DataError, match=r"0016E5_00660\.png holds label values \[12, 200, 255\] outside 0\.\.11"):
        load_split(tmp_path, "train", None)


def test_colour_label_is_refused(camvid_dir, tmp_path):
    copy_split(camvid_dir, tmp_path)
    label = tmp_path / "trainannot" / "0016E5_00660.png"
    values = np.asarray(Image.open(label))
    Image.fromarray(np.stack([values, values, np.zeros_like(values)], axis=-1)).save(label)
    with pytest.raises(DataError, match=r"0016E5_00660\.png is a colour image"):
        load_split(tmp_path, "train", None)


def test_training_pipeline_keeps_image_and_mask_aligned(camvid_dir):
    """Flip, scale and crop must move the mask with the image: a planted marker proves it."""
    images, masks, _ = load_split(camvid_dir, "train", (176, 240))
    # Scaled down, nearest-neighbour skips rows and columns, so a one-pixel strip of car or road can vanish
    # from the mask while the antialiased image still shows it: the marker below has no such strips.
    kernel = np.ones((3, 3), np.uint8)
    masks = np.stack([cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
                      for mask in masks])
    # Paint the car pixels pure red and everything else pure green: after any augmentation
    # the mask must still be exactly where the red is.
    images = np.where(masks[..., None] == 1, np.array([255, 0, 0], np.uint8), np.array([0, 255, 0], np.uint8))
    crop = default_crop_size((176, 240), 16)
    dataset = make_dataset(images, masks, batch_size=2, stride=16, training=True, augment=True, crop_size=crop)
    for batch_images, batch_masks, batch_weights in dataset.take(4):
        assert batch_images.shape == (2, *crop, 3) and batch_masks.shape == (2, *crop, 1)
        assert float(np.min(batch_weights)) == 1.0  # crops never need padding
        # Brightness moves every channel alike; contrast (0.8..1.2, about each channel's own mean) moves
        # a channel by at most 0.2 * 255 = 51. So red minus green stays above 60 on car, below -60 elsewhere,
        # whatever the crop's share of car (a grey background could drift past any small bound).
        red_minus_green = batch_images[..., 0].numpy() - batch_images[..., 1].numpy()
        for difference, car in zip(red_minus_green, batch_masks[..., 0].numpy().astype(np.uint8)):
            # Nearest-neighbour mask and antialiased image agree away from the edges of each region, and
            # of the crop (the image there blends in pixels from beyond it, which the crop's mask lacks).
            # Beyond the crop is road to the erosion and car to the dilation: interior to neither.
            square = np.ones((5, 5), np.uint8)
            interior = cv2.erode(car, square, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
            outside = cv2.dilate(car, square, borderType=cv2.BORDER_CONSTANT, borderValue=1) == 0
            assert np.all(difference[interior] > 60)
            assert np.all(difference[outside] < -60)


def test_evaluation_pipeline_pads_with_zero_weight(camvid_dir):
    images, masks, _ = load_split(camvid_dir, "val", None)  # 360x480: not a multiple of 16
    (batch_images, batch_masks, batch_weights), = make_dataset(images, masks, batch_size=2, stride=16).take(1)
    assert batch_images.shape == (2, 368, 480, 3)
    assert float(batch_weights[:, :360].numpy().min()) == 1.0
    assert float(batch_weights[:, 360:].numpy().max()) == 0.0
    np.testing.assert_array_equal(batch_masks[:, :360, :, 0].numpy(), masks)


def test_strong_photometric_augmentation_keeps_the_mask_on_the_car(camvid_dir):
    """Darkening, casts, blur, noise and JPEG change every pixel; the car must stay where the mask says."""
    images, masks, _ = load_split(camvid_dir, "train", (176, 240))
    images = np.where(masks[..., None] == 1, np.array([255, 0, 0], np.uint8), np.array([128, 128, 128], np.uint8))
    crop = default_crop_size((176, 240), 16)
    dataset = make_dataset(images, masks, batch_size=2, stride=16, training=True, augment=True, crop_size=crop,
                           photometric="strong", seed=1)
    seen_dark = False
    for batch_images, batch_masks, _ in dataset.repeat().take(8):
        batch_images = batch_images.numpy()
        assert batch_images.min() >= 0.0 and batch_images.max() <= 255.0
        for image, mask in zip(batch_images, batch_masks.numpy()[..., 0] == 1):
            interior = cv2.erode(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
            outside = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)) == 0
            if interior.sum() < 50 or outside.sum() < 50:
                continue
            red_minus_green = image[..., 0] - image[..., 1]
            assert np.median(red_minus_green[interior]) > np.median(red_minus_green[outside]) + 25
            seen_dark |= float(np.median(image[outside])) < 100  # the grey 128 background darkened
    assert seen_dark


def _longest_run(mask: np.ndarray) -> int:
    """The longest horizontal run of ones in any row."""
    longest = 0
    for row in mask:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        if edges.size:
            longest = max(longest, int((edges[1::2] - edges[0::2]).max()))
    return longest


@pytest.mark.parametrize("photometric, widest", [("basic", 10), ("strong", 12)])
def test_strong_photometric_zooms_training_crops_further_in(photometric, widest):
    """Stripes 8 pixels wide: zoomed by at most 1.25 (basic) they stay at most 10 wide; by at most 1.5
    (strong) some reach 12, wider than basic ever makes them, and none exceed it."""
    columns = (np.arange(240) // 8) % 2
    masks = np.broadcast_to(columns, (4, 176, 240)).astype(np.uint8).copy()
    images = np.repeat(masks[..., None] * 200, 3, axis=-1).astype(np.uint8)
    dataset = make_dataset(images, masks, batch_size=4, stride=16, training=True, augment=True, crop_size=(128, 176),
                           seed=3, photometric=photometric)
    runs = [_longest_run(mask) for batch in dataset.repeat().take(40) for mask in batch[1].numpy()[..., 0] == 1]
    assert max(runs) <= widest + 1  # nearest-neighbour resizing rounds a stripe's edge by a pixel
    assert max(runs) >= widest  # the range's top is reached (160 samples of a uniform scale)


# --- your own images and masks ---------------------------------------------------------------------------

def test_plain_folder_holds_out_whole_groups_of_file_names(camvid_dir, tmp_path):
    folder = plain_folder(camvid_dir, tmp_path)
    train, val = find_pairs(folder, "train"), find_pairs(folder, "val")
    assert all(pair.image.suffix == ".jpg" and pair.label.parent.name == "masks" for pair in train + val)
    # Groups by the default pattern (the name up to the first "_"): 0001TP, 0006R0, 0016E5; the last of
    # them by name (a fifth of three, at least one) is val, every frame of it.
    assert [pair.stem for pair in train] == ["0001TP_006690", "0006R0_f00990"]
    assert {pair.stem.split("_")[0] for pair in val} == {"0016E5"} and len(val) == 4
    assert plain_split_groups(folder, "train") == ["0001TP", "0006R0"]
    assert plain_split_groups(folder, "val") == ["0016E5"]
    assert check_dataset(folder, BINARY_MASK) == []  # grouped, clean 0/255 masks: nothing to warn about


def test_group_pattern_chooses_the_groups(camvid_dir, tmp_path):
    folder = plain_folder(camvid_dir, tmp_path)
    # The whole match names the group when the pattern captures nothing: here 0001, 0006, 0016.
    assert [pair.stem for pair in find_pairs(folder, "val", group_pattern=r"^\d{4}")] == [
        "0016E5_00660", "0016E5_05280", "0016E5_07959", "0016E5_08137"]
    assert plain_split_groups(folder, "val", r"^\d{4}") == ["0016"]
    # Five groups hold out one: round(5 * 0.2).
    stems = [f"{group}_{frame}" for group in "abcde" for frame in range(3)]
    assert plain_split(stems) == ({"e_0", "e_1", "e_2"}, None)


def test_plain_binary_masks_give_the_same_masks_as_camvid_labels(camvid_dir, tmp_path):
    _, camvid_masks, _ = load_split(camvid_dir, "val", (176, 240))
    for name, mask in (("255", lambda labels: np.where(labels == 8, 255, 0)),
                       ("one", lambda labels: (labels == 8).astype(np.uint8))):
        folder = plain_folder(camvid_dir, tmp_path / name, mask, val_folder=True)
        _, masks, pairs = load_split(folder, "val", (176, 240), BINARY_MASK)
        assert [pair.stem for pair in pairs] == ["0016E5_07959", "0016E5_08137"]
        np.testing.assert_array_equal(masks, camvid_masks)


def test_plain_class_id_maps_take_a_target_class(camvid_dir, tmp_path):
    folder = plain_folder(camvid_dir, tmp_path, mask=lambda labels: labels, val_folder=True)
    _, pedestrians, _ = load_split(folder, "train", None, target_class=9)
    _, camvid_pedestrians, _ = load_split(camvid_dir, "train", None, target_class=9)
    np.testing.assert_array_equal(pedestrians, camvid_pedestrians)
    assert pedestrians.sum() > 0


def test_plain_val_folder_is_the_val_split(camvid_dir, tmp_path):
    folder = plain_folder(camvid_dir, tmp_path, val_folder=True)
    assert len(find_pairs(folder, "train")) == 4
    assert [pair.image.parent for pair in find_pairs(folder, "val")] == [folder / "val" / "images"] * 2


def test_file_names_without_groups_draw_val_at_random_and_warn(camvid_dir, tmp_path):
    folder = plain_folder(camvid_dir, tmp_path)
    for path in sorted((folder / "images").iterdir()) + sorted((folder / "masks").iterdir()):
        path.rename(path.with_name(path.name.replace("_", "-")))  # no "_": the default pattern matches nothing
    val = find_pairs(folder, "val")
    assert len(val) == 1 and val == find_pairs(folder, "val")  # a fifth of six frames, the same every time
    assert plain_split_groups(folder, "val") == []  # no groups: never taken for a held-out scene
    warning, = check_dataset(folder, BINARY_MASK)
    assert "val is 20% of the frames drawn at random" in warning
    assert "does not match the file name '0001TP-006690'" in warning and "val flatters" in warning


# --- bad data: one message each, naming the files ----------------------------------------------------------

def test_a_folder_of_neither_layout_names_all_three(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(DataError, match=r"trainannot/ .*images_prepped_train/ .*images/ and masks/"):
        check_dataset(tmp_path, BINARY_MASK)


def test_images_without_masks_are_named_and_counted(camvid_dir, tmp_path):
    folder = plain_folder(camvid_dir, tmp_path)
    for stem in ("0001TP_006690", "0006R0_f00990", "0016E5_00660", "0016E5_05280"):
        (folder / "masks" / f"{stem}.png").unlink()
    with pytest.raises(DataError, match=r"^4 images in .*images have no mask of the same name in .*masks: "
                                        r".*0001TP_006690\.jpg, .*0006R0_f00990\.jpg, .*0016E5_00660\.jpg and 1 more"):
        check_dataset(folder, BINARY_MASK)


def test_two_images_of_one_name_are_named(camvid_dir, tmp_path):
    folder = plain_folder(camvid_dir, tmp_path)
    shutil.copy(camvid_dir / "train" / "0006R0_f00990.png", folder / "images")  # beside 0006R0_f00990.jpg
    with pytest.raises(DataError, match=r"^2 files in .*images share a name but not a type, so which of them pairs "
                                        r"is unclear: 0006R0_f00990\.jpg, 0006R0_f00990\.png\. Keep one"):
        check_dataset(folder, BINARY_MASK)


def test_a_mask_without_an_image_is_named(camvid_dir, tmp_path):
    folder = plain_folder(camvid_dir, tmp_path)
    (folder / "images" / "0006R0_f00990.jpg").unlink()
    with pytest.raises(DataError, match=r"masks/0006R0_f00990\.png has no image in"):
        check_dataset(folder, BINARY_MASK)


def test_masks_of_another_size_than_their_image_are_named(camvid_dir, tmp_path):
    folder = plain_folder(camvid_dir, tmp_path)
    for stem in ("0001TP_006690", "0016E5_07959"):
        mask = folder / "masks" / f"{stem}.png"
        Image.open(mask).resize((240, 180), Image.NEAREST).save(mask)
    with pytest.raises(DataError, match=r"^2 of the 6 pairs have a mask of another size than its image: "
                                        r".*0001TP_006690\.png is 240x180 but its image 0001TP_006690\.jpg is 480x360; "
                                        r".*0016E5_07959\.png"):
        check_dataset(folder, BINARY_MASK)


def test_an_unreadable_file_is_named(camvid_dir, tmp_path):
    folder = plain_folder(camvid_dir, tmp_path)
    (folder / "images" / "0016E5_00660.jpg").write_text("not a picture")
    with pytest.raises(DataError, match=r"^1 of the 6 pairs have a file that cannot be read: "
                                        r".*images/0016E5_00660\.jpg cannot be read"):
        check_dataset(folder, BINARY_MASK)


def test_grey_mask_values_are_read_by_threshold_and_counted(camvid_dir, tmp_path):
    folder = plain_folder(camvid_dir, tmp_path)
    # Saved as JPEG and back: grey values all along the car's edges.
    mask_path = folder / "masks" / "0016E5_05280.png"
    mask = np.asarray(Image.open(mask_path))
    Image.fromarray(mask).save(tmp_path / "mask.jpg", quality=75)
    grey = np.asarray(Image.open(tmp_path / "mask.jpg"))
    Image.fromarray(grey).save(mask_path)
    warning, = check_dataset(folder, BINARY_MASK)
    count = np.count_nonzero((grey > 0) & (grey < 255))
    assert warning.startswith(f"1 of 6 masks hold grey values between 0 and 255 ({count} pixels")
    assert "read as the class where >= 128" in warning and "0016E5_05280.png" in warning
    read = load_split(folder, "train", None, BINARY_MASK)[1]
    assert set(np.unique(read)) == {0, 1}


def test_every_mask_empty_stops_training(camvid_dir, tmp_path):
    folder = plain_folder(camvid_dir, tmp_path, mask=lambda labels: np.zeros_like(labels))
    with pytest.raises(DataError, match=r"No mask in .* marks a single pixel with a value of 255 \(or 1 in 0/1 "
                                        r"masks\): all 6 masks are empty"):
        check_dataset(folder, BINARY_MASK)


def test_class_id_maps_read_as_binary_masks_are_refused(camvid_dir, tmp_path):
    folder = plain_folder(camvid_dir, tmp_path, mask=lambda labels: labels)  # ids 0..11, no --target-class
    with pytest.raises(DataError, match=r"^6 of the 6 pairs have a mask of values 2\.\.127 and nothing above: "
                                        r"class-id maps, not binary masks \(pass --target-class ID\): "
                                        r".*0001TP_006690\.png \(values up to 11\)"):
        check_dataset(folder, BINARY_MASK)


def test_camvid_folders_pass_the_same_check_unchanged(camvid_dir, tmp_path):
    assert check_dataset(camvid_dir, 8) == []
    copy_split(camvid_dir, tmp_path)
    copy_split(camvid_dir, tmp_path, "val")
    label = tmp_path / "valannot" / "0016E5_07959.png"
    values = np.asarray(Image.open(label)).copy()
    values[0, 0] = 200
    Image.fromarray(values).save(label)
    with pytest.raises(DataError, match=r"^1 of the 6 pairs have a label map with values that are not CamVid class "
                                        r"ids: .*0016E5_07959\.png holds label values \[200\]"):
        check_dataset(tmp_path, 8)
