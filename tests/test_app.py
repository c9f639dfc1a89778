"""The Gradio app over HTTP, as its users and API clients reach it (no browser here)."""
from __future__ import annotations

import copy
import dataclasses
import re

import httpx
import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from demo.bundle import DatasetInfo, TargetClass
from demo.engine import SegmentationEngine
from demo.examples import EXAMPLES, EXAMPLES_DIR, example_label
from demo.handlers import CAR_COLOUR, Segmentation, describe_result, draw_cars, parse_colour
from demo.model_facts import class_words, describe_architecture, network_in_words
from demo.page import describe_model
from demo.ui import build_demo
from helpers import running_app_py, segment, serving_config

CAMVID_EXAMPLE = sorted(EXAMPLES_DIR.glob("*.png"))[0]


@pytest.fixture(scope="module")
def client(launch_app, tiny_bundle) -> Client:
    return Client(launch_app(build_demo(tiny_bundle)), verbose=False)


def test_segment_endpoint_returns_overlay_mask_and_stats(client):
    overlay_path, mask_path, stats = segment(client, CAMVID_EXAMPLE)

    photo = Image.open(CAMVID_EXAMPLE)
    overlay, mask = Image.open(overlay_path), Image.open(mask_path)
    assert overlay.size == photo.size == (480, 360)
    assert mask.format == "PNG" and mask.size == photo.size
    mask_pixels = np.asarray(mask)
    assert set(np.unique(mask_pixels)) <= {0, 255}, "the mask is binary: car 255, background 0"
    assert set(stats) == {"coverage_percent", "car_regions"}
    assert stats["coverage_percent"] == pytest.approx(100 * np.mean(mask_pixels == 255), abs=0.01)


def test_the_result_line_counts_the_pixels_a_nearby_threshold_would_flip():
    # One pixel at each of 0.005, 0.015, ..., 0.995: each 0.10 of probability holds 10% of them.
    probabilities = ((np.arange(100) + 0.5) / 100).astype(np.float32).reshape(10, 10)
    segmentation = Segmentation(np.zeros((10, 10, 3), np.uint8), probabilities, network_seconds=0.02)
    stats = {"coverage_percent": 15.0, "car_regions": 1}

    served = describe_result(segmentation, stats, 0.85, from_memory=False)
    assert "Thresholds from 0.75 to 0.95 change 20.0% of the pixels" in served
    assert "in **1** separate region." in served and served.endswith("The network took 20 ms.")
    # Near the slider's end the range is clipped: 0.85 to 1.00 holds 15 of the 100.
    assert "from 0.85 to 1.00 change 15.0%" in describe_result(segmentation, stats, 0.95, from_memory=True)


def test_the_threshold_parameter_is_applied(client):
    everything = segment(client, CAMVID_EXAMPLE, threshold=0.0)[2]
    strict = segment(client, CAMVID_EXAMPLE, threshold=0.99)[2]
    assert everything["coverage_percent"] == 100.0
    assert strict["coverage_percent"] < everything["coverage_percent"]


def test_only_segment_and_segment_video_are_public_and_segment_takes_image_and_threshold(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert list(api["named_endpoints"]) == ["/segment", "/segment_video"]  # /segment_video: test_video_app.py
    assert not api["unnamed_endpoints"]
    endpoint = api["named_endpoints"]["/segment"]
    assert [parameter["parameter_name"] for parameter in endpoint["parameters"]] == ["image", "threshold"]
    assert [output["component"] for output in endpoint["returns"]] == ["Image", "Image", "Json"]


def test_the_uploaded_file_itself_reaches_the_decoder(client, tmp_path):
    # A portrait phone photo stored landscape with an EXIF rotation: the answer must be portrait.
    stored = Image.open(CAMVID_EXAMPLE).convert("RGB")
    exif = stored.getexif()
    exif[0x0112] = 6
    rotated = tmp_path / "portrait.jpg"
    stored.save(rotated, quality=90, exif=exif.tobytes())
    # A 16-bit grayscale PNG, which a conversion to 8-bit RGB upstream would have clipped to white.
    deep = tmp_path / "sixteen_bit.png"
    Image.fromarray(np.full((90, 120), 100 * 257, np.uint16)).save(deep)

    assert Image.open(segment(client, rotated)[0]).size == (360, 480)
    overlay = np.asarray(Image.open(segment(client, deep, threshold=1.0)[0]))  # nothing tinted
    assert overlay.shape == (90, 120, 3)
    assert np.abs(overlay.astype(int) - 100).max() <= 3, "100 * 257 in 16 bits is 100 in 8 bits (JPEG aside)"


def test_a_file_that_is_not_an_image_gets_a_clear_error_and_the_server_keeps_serving(client, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("this is a text file with a .png name\n")

    with pytest.raises(AppError, match="not an image that can be read") as refusal:
        segment(client, fake)
    assert "Traceback" not in str(refusal.value)

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(AppError, match="empty"):
        segment(client, empty)

    overlay_path, _, _ = segment(client, CAMVID_EXAMPLE)
    assert Image.open(overlay_path).size == (480, 360)


def test_the_server_refuses_uploads_over_the_size_limit(client, tmp_path):
    from gradio.utils import _parse_file_size

    from demo.ui import MAX_UPLOAD_SIZE

    upload = f"{client.src.rstrip('/')}/gradio_api/upload"
    too_big = b"\0" * (_parse_file_size(MAX_UPLOAD_SIZE) + 1)
    assert httpx.post(upload, files={"files": ("big.mp4", too_big)}, timeout=60).status_code == 413
    # A phone's minute of 1080p (about 130 MB) is taken.
    assert httpx.post(upload, files={"files": ("phone.mp4", too_big[:130 * 2**20])}, timeout=60).status_code == 200


def test_page_opens_on_a_worked_example_and_says_what_the_model_is_in_about_the_model(tiny_bundle):
    tiny_bundle.notice = "The configured model could not be loaded, so the default model is served."
    try:
        config = build_demo(tiny_bundle).get_config_file()
    finally:
        tiny_bundle.notice = ""
    props = {component["props"].get("elem_id"): component["props"] for component in config["components"]}
    texts = [component["props"].get("value") or "" for component in config["components"]
             if component["type"] == "markdown"]
    assert props["coverage"]["value"].startswith(f"Example: {EXAMPLES[0].scene}")
    assert "At threshold 0.50" in props["coverage"]["value"]
    assert props["result"]["value"] is not None and props["mask"]["value"] is not None
    assert props["threshold"]["info"].startswith("Lower finds more cars and more false alarms")
    about = next(text for text in texts if text.startswith("**What it is.**"))
    assert tiny_bundle.source in about and "validation frames: **0.50**" in about and "ONNX Runtime" in about
    assert "no drive held out of training was measured" in about
    assert any("Warning" in text and "could not be loaded" in text for text in texts)


def test_about_the_model_gives_the_held_out_drives_when_the_bundle_has_them(tiny_bundle):
    config = tiny_bundle.config
    tiny_bundle.config = copy.deepcopy(config)
    tiny_bundle.config.metrics["held_out_drives"] = {"0006R0": {"iou": 0.6512, "images": 101, "runs": 2},
                                                     "0001TP": {"iou": 0.5873, "images": 62}}
    tiny_bundle.config.threshold_selected_on = "train"
    tiny_bundle.revision = "0123456789abcdef0123"
    try:
        about = describe_model(tiny_bundle, "tensorflow")
        labels = [example_label(example, tiny_bundle) for example in EXAMPLES]
    finally:
        tiny_bundle.revision = None
        tiny_bundle.config = config
    assert "- validation frames: **0.50**" in about
    assert "- drive 0006R0, by the same recipe trained without it: **0.65** (101 frames), the mean of 2 training runs" in about
    assert "- drive 0001TP, by the same recipe trained without it: **0.59** (62 frames)" in about
    assert "no drive held out" not in about
    assert "was chosen on the training frames" in about
    assert "revision `0123456789ab`" in about and "TensorFlow" in about
    assert f"SHA-256 `{config.model_sha256[:12]}`" in about
    # Held-out figures describe the recipe's other runs: the served model may well have trained on those drives.
    assert labels == ["Supermarket car park (drive 0006R0: trained on)",
                      "Shopping street (drive 0001TP: trained on)",
                      "Red bus among cars (drive 0016E5: trained on)",
                      "Parked Mini (drive 0016E5: validation, not trained on)"]


def test_a_bundle_that_records_its_splits_drives_says_which_examples_and_val_drives_are_new(tiny_bundle):
    dataset = tiny_bundle.config.dataset
    dataset.train_drives, dataset.val_drives = ["0006R0", "0016E5"], ["0001TP"]
    try:
        about = describe_model(tiny_bundle)
        labels = [example_label(example, tiny_bundle) for example in EXAMPLES]
    finally:
        dataset.train_drives = dataset.val_drives = None
    assert "- the validation frames come from drives training never saw (0001TP)." in about
    assert "no drive held out" not in about
    assert [label.split(": ")[-1] for label in labels] == ["trained on)", "new to this model)", "trained on)",
                                                          "validation, not trained on)"]


def test_the_architecture_in_words_names_the_encoder_of_every_efficientnet_unet(tiny_bundle):
    for name in ("efficientnet-lite1-unet", "efficientnet-lite1-unet-lean"):
        config = dataclasses.replace(tiny_bundle.config, architecture=name, parameters=4_590_000, training={})
        assert describe_architecture(config) == "a U-Net on an EfficientNet-Lite1 encoder (4.6 million weights)"


def test_about_the_model_without_metrics(tiny_bundle):
    metrics, tiny_bundle.config.metrics = tiny_bundle.config.metrics, {}
    try:
        about = describe_model(tiny_bundle)
    finally:
        tiny_bundle.config.metrics = metrics
    assert "validation frames: not measured" in about and "no drive held out of training was measured" in about


def test_the_examples_are_camvid_frames_from_three_drives():
    for example in EXAMPLES:
        assert Image.open(EXAMPLES_DIR / example.file).size == (480, 360), example.file
    assert {example.drive for example in EXAMPLES} == {"0006R0", "0001TP", "0016E5"}
    assert [example.split for example in EXAMPLES].count("val") == 1


def test_cars_are_outlined_in_full_colour_so_a_red_car_shows_as_well_as_any():
    red_car = np.full((360, 480, 3), (200, 30, 30), np.uint8)
    mask = np.zeros((360, 480), bool)
    mask[100:200, 100:300] = True

    drawn = draw_cars(red_car, mask, CAR_COLOUR, opacity=0.0)

    assert (drawn[100, 150] == CAR_COLOUR).all() and (drawn[101, 299] == CAR_COLOUR).all(), "a 2 px outline"
    assert (drawn[102, 150] == red_car[0, 0]).all() and (drawn[150, 200] == red_car[0, 0]).all(), "inside, opacity 0"
    assert (drawn[99, 150] == red_car[0, 0]).all() and (drawn[50, 50] == red_car[0, 0]).all(), "outside"
    tinted = draw_cars(red_car, mask, CAR_COLOUR, opacity=0.4)[150, 200].astype(int)
    assert np.abs(tinted - red_car[0, 0]).max() > 80, "the magenta fill changes a red car visibly"


@pytest.mark.parametrize("value, rgb", [("#0c2238", (12, 34, 56)), ("#FFFFFF", (255, 255, 255)),
                                        ("", CAR_COLOUR), (None, CAR_COLOUR), ("red", CAR_COLOUR)])
def test_colour_picker_values_are_parsed(value, rgb):
    assert parse_colour(value) == rgb


def test_app_py_serves_on_loopback_where_gradio_env_says(tiny_bundle_dir, tmp_path, unused_port):
    log = tmp_path / "app.log"
    with running_app_py(tiny_bundle_dir, unused_port, log) as (_, config):
        assert f"http://127.0.0.1:{unused_port}" in log.read_text()
        assert any(str(tiny_bundle_dir) in str(component["props"].get("value")) for component in config["components"])


@pytest.mark.parametrize("runtime, words", [
    ("onnxruntime", "ONNX Runtime, with the weights stored at half precision"),  # the default: the carried ONNX graph
    ("litert", "weights stored at half precision (float16)"),  # what the carried LiteRT graphs are
    ("litert-int8", "8-bit integers"),
    ("litert-float32", "LiteRT, on this server's CPU"),
])
def test_about_the_model_says_what_each_runtime_runs(tiny_bundle, runtime, words):
    about = describe_model(tiny_bundle, runtime)
    assert words in about and f"`MODEL_RUNTIME={runtime}`" in about
    if runtime != "litert-int8":
        assert "8-bit" not in about


def test_about_the_model_says_when_the_onnx_graph_computes_in_int8(tiny_bundle):
    record = tiny_bundle.config.serving_graphs
    entry = record["files"]["graph_any_shape.onnx"]
    try:
        entry["weights"] = "int8"  # as `training.export_graphs --int8` records it
        about = describe_model(tiny_bundle, "onnxruntime")
    finally:
        entry["weights"] = "float16"
    assert "ONNX Runtime, computing in 8-bit integers" in about and "half precision" not in about
    assert "`MODEL_RUNTIME=onnxruntime`" in about


def test_the_app_warms_its_engine_up_when_built(tiny_bundle, monkeypatch):
    warmed = []
    monkeypatch.setattr(SegmentationEngine, "warm_up", lambda engine: warmed.append(engine))
    build_demo(tiny_bundle)
    assert len(warmed) == 1


# --- a bundle of another class: its name, never "car", wherever the page and the API name the class --------
# Vehicle words that describe how CamVid was filmed, not the class, stay in any bundle's text.
FILMED_FROM_A_CAR = re.compile(r"filmed from a car driving|car park")


def words_naming_cars(text: str) -> list[str]:
    return re.findall(r"\bcars?\b", FILMED_FROM_A_CAR.sub("", text), re.IGNORECASE)


@pytest.fixture(scope="module")
def pedestrian_bundle(tiny_bundle):
    """The tiny bundle as config.json naming its class "pedestrian" (CamVid's class 9) would load it."""
    return dataclasses.replace(tiny_bundle, config=dataclasses.replace(tiny_bundle.config,
                                                                       target_class=TargetClass(9, "pedestrian")))


@pytest.fixture(scope="module")
def pedestrian_demo(pedestrian_bundle):
    return build_demo(pedestrian_bundle)


def test_a_pedestrian_bundle_page_says_pedestrians_and_never_cars(pedestrian_demo, pedestrian_bundle):
    config = pedestrian_demo.get_config_file()
    props = {component["props"].get("elem_id"): component["props"] for component in config["components"]}
    assert config["title"] == "Find the pedestrians"
    texts = [props["threshold"]["info"], props["mask"]["label"], props["coverage"]["value"]]
    texts += [component["props"].get("value") or "" for component in config["components"]
              if component["type"] == "markdown"]
    texts += [component["props"]["label"] for component in config["components"]
              if component["type"] == "accordion"]
    page = "\n".join(texts)
    assert "# Find the pedestrians in a street photo\n" in page
    assert "marks every pedestrian pixel in magenta" in page
    assert "of the pixels are pedestrian, in **" in props["coverage"]["value"]
    assert props["threshold"]["info"].startswith("Lower finds more pedestrians and more false alarms")
    assert "Pedestrian mask, to download (PNG: pedestrian white, the rest black)" in page
    assert props["mask"]["label"] == "Pedestrian mask" and props["mask"]["value"]["path"].endswith("/pedestrian_mask.png")
    about = describe_model(pedestrian_bundle)
    assert "a probability of being pedestrian" in about and "marked as pedestrian, the share both did" in about
    assert words_naming_cars(page + about) == []


def test_loading_the_page_copies_no_kept_photo_or_engine(tiny_bundle):
    """Gradio deep-copies the page's config on every load; a State's delete_callback is in it, so it must be a
    plain function (copied as itself), not a bound method (copied with the store or engine it is bound to)."""
    config = build_demo(tiny_bundle).get_config_file()
    callbacks = [component["props"]["delete_callback"] for component in config["components"]
                 if component["type"] == "state" and component["props"].get("delete_callback")]
    assert len(callbacks) >= 2  # the photo's and the clip's, and Gradio's own for the live camera's
    assert all(copy.deepcopy(callback) is callback for callback in callbacks)


def test_a_bundle_of_own_data_says_what_it_learnt_from_not_cambridge(pedestrian_bundle):
    own = dataclasses.replace(pedestrian_bundle.config, target_class=TargetClass(255, "weed"),
                              dataset=DatasetInfo(name="field-photos (images/ and masks/)"))
    assert network_in_words(own) == "a network trained on field-photos (images/ and masks/)"
    about = describe_model(dataclasses.replace(pedestrian_bundle, config=own))
    assert "**What it learnt from.** field-photos (images/ and masks/): images with weed masks" in about
    assert "Cambridge" not in about and "CamVid" not in about
    assert "Cambridge (UK)" in network_in_words(pedestrian_bundle.config)  # the tiny bundle learnt from CamVid


def test_a_pedestrian_bundle_api_names_pedestrians_and_counts_regions_under_a_key_naming_no_class(
        launch_app, pedestrian_demo):
    pedestrian_client = Client(launch_app(pedestrian_demo), verbose=False)
    endpoint = pedestrian_client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/segment"]
    assert [output["label"] for output in endpoint["returns"]] == ["Pedestrians", "Pedestrian mask",
                                                                   "Pedestrian coverage"]
    description = pedestrian_demo.get_api_info()["named_endpoints"]["/segment"]["description"]
    assert description.startswith("Find the pedestrians in a photo. Returns the photo with pedestrian pixels")
    assert '{"coverage_percent", "regions"}' in description and words_naming_cars(description) == []

    overlay_path, mask_path, stats = segment(pedestrian_client, CAMVID_EXAMPLE)
    assert set(stats) == {"coverage_percent", "regions"}, "clients of any class but car read `regions`"
    assert overlay_path.endswith("pedestrians.jpeg") and mask_path.endswith("pedestrian_mask.png")


def test_the_result_line_names_the_class():
    segmentation = Segmentation(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.float32), 0.02)
    line = describe_result(segmentation, {"coverage_percent": 3.5, "regions": 2}, 0.5, from_memory=False,
                           singular="pedestrian")
    assert "**3.50%** of the pixels are pedestrian, in **2** separate regions." in line
    assert words_naming_cars(line) == []


@pytest.mark.parametrize(("name", "singular", "plural"), [
    ("car", "car", "cars"), ("pedestrian", "pedestrian", "pedestrians"), ("person", "person", "people"),
    ("bus", "bus", "buses"), ("lorry", "lorry", "lorries"), ("sky", "sky", "skies"), ("donkey", "donkey", "donkeys"),
    ("sign_symbol", "sign symbol", "sign symbols"), ("traffic light", "traffic light", "traffic lights"),
    ("church", "church", "churches"), ("box", "box", "boxes"),
])
def test_class_words_read_the_bundles_class_name_in_english(name, singular, plural):
    assert class_words(dataclasses.replace(serving_config(), target_class=TargetClass(9, name))) == (singular, plural)


def test_a_large_photo_keeps_its_small_cars(launch_app, tmp_path):
    # A 1440x1920 photo of 4x4-pixel cars 8 pixels apart, to a model that marks red pixels: fed at the
    # training frames' area (180x240, an eighth) each car would be a quarter of a pixel and vanish; the page
    # and /segment feed up to PHOTO_FEED_PIXELS, where each is over a pixel, and find them.
    from demo.engine import PHOTO_FEED_PIXELS, SegmentationEngine, feed_size
    from demo.loading import load_bundle
    from helpers import red_channel_model
    from training.bundle import write_bundle

    bundle = load_bundle(write_bundle(tmp_path / "red", red_channel_model(), serving_config((180, 240), stride=16)))
    cars = np.kron(np.ones((180, 240), bool), np.pad(np.ones((4, 4), bool), ((0, 4), (0, 4))))
    photo = np.zeros((1440, 1920, 3), np.uint8)
    photo[..., 0] = np.where(cars, 255, 0)
    photo[..., 1] = 90
    path = tmp_path / "cars.png"
    Image.fromarray(photo).save(path)
    engine = SegmentationEngine(bundle.model, bundle.config)
    assert not (engine.predict_probabilities(photo) >= 0.5).any(), "at the training area they vanish"
    assert np.prod(feed_size(1440, 1920, bundle.config, PHOTO_FEED_PIXELS)) > 4 * 180 * 240

    client = Client(launch_app(build_demo(bundle)), verbose=False)
    _, mask_path, stats = segment(client, path)
    found = np.asarray(Image.open(mask_path)) == 255
    assert found.shape == cars.shape
    each_car_found = found.reshape(180, 8, 240, 8)[:, :4, :, :4].any(axis=(1, 3))
    assert each_car_found.all() and (found & ~cars).sum() < 0.1 * cars.sum()
