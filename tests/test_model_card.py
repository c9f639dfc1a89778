"""The model card: Hub metadata that parses back to config.json's numbers, and the prose the Hub page needs."""
from __future__ import annotations

import json
import re

from huggingface_hub import ModelCard

from demo.bundle import CARD_FILE, CONFIG_FILE, BundleConfig
from training.model_card import build_model_card, write_model_card

CONFIG = {
    "schema_version": 1, "architecture": "unet", "input_size": [352, 480], "resize": "keep_aspect", "stride": 16,
    "target_class": {"id": 8, "name": "car"}, "threshold": 0.45, "parameters": 1_944_049, "gflops_per_image": 18.1,
    "dataset": {"name": "CamVid (SegNet layout)"},
    "metrics": {
        "val": {"iou": 0.7312, "dice": 0.8447, "precision": 0.8123, "recall": 0.8801, "threshold": 0.45,
                "images": 101},
        "heldout_0006R0": {"iou": 0.5123, "dice": 0.6774, "precision": 0.7001, "recall": 0.6561},
    },
    "training": {"loss": "bce_dice", "learning_rate": 0.002, "schedule": "cosine", "batch_size": 8,
                 "epochs_run": 40, "best_epoch": 33, "augment": True, "crop_size": [256, 256],
                 "wall_time_s": 5400, "imagenet_weights_used": False},
    "model_sha256": "0" * 64,
}


def test_card_metadata_parses_back_to_the_config(tmp_path):
    (tmp_path / CONFIG_FILE).write_text(json.dumps(CONFIG))
    write_model_card(tmp_path)

    card = ModelCard.load(tmp_path / CARD_FILE)
    data = card.data
    assert data.library_name == "keras"
    assert data.pipeline_tag == "image-segmentation"
    assert data.license == "cc-by-nc-4.0"
    assert data.datasets == ["camvid"]
    assert {"image-segmentation", "unet", "camvid", "car", "keras"} <= set(data.tags)

    reported = {(result.dataset_split, result.metric_type): result.metric_value for result in data.eval_results}
    recorded = {(split, metric): value for split, metrics in CONFIG["metrics"].items()
                for metric, value in metrics.items() if metric in ("iou", "dice", "precision", "recall")}
    assert reported == recorded
    assert all(result.task_type == "image-segmentation" and result.dataset_type == "camvid"
               for result in data.eval_results)


def test_card_text_says_how_it_was_trained_how_to_load_it_and_its_limits():
    text = build_model_card(BundleConfig.from_dict(CONFIG)).text
    assert "A U-Net (1.9 million weights): a network that gives every pixel a probability of being car" in text
    assert "architecture `unet` (18.1 GFLOPs per 352x480 image)" in text
    assert "The default threshold, 0.45, was chosen on the validation frames." in text
    assert "Adam at 0.002 (cosine schedule), batch 8, 40 epochs (best val IoU at epoch 33)" in text
    assert 'keras.saving.load_model("model.keras", safe_mode=True)' in text
    assert "Cambridge" in text and "daylight" in text and "2007 and 2008" in text
    assert "@article{brostow2009camvid" in text and "@article{badrinarayanan2017segnet" in text


def test_card_for_a_hub_repo_shows_how_to_download_it():
    text = build_model_card(BundleConfig.from_dict(CONFIG), repo_id="someone/car-unet").text
    assert 'huggingface_hub.snapshot_download("someone/car-unet")' in text
    assert 'keras.saving.load_model(f"{folder}/model.keras", safe_mode=True)' in text


def test_card_states_no_facts_the_config_lacks():
    sparse = {key: value for key, value in CONFIG.items() if key not in ("parameters", "gflops_per_image", "training")}
    text = build_model_card(BundleConfig.from_dict(sparse)).text
    assert "million weights" not in text and "GFLOPs" not in text
    assert "records no training details" in text


def test_card_says_how_a_pretrained_encoder_was_fine_tuned():
    fine_tuned = {**CONFIG, "architecture": "efficientnet-lite1-unet", "training": {
        **CONFIG["training"], "imagenet_weights_used": True, "frozen_epochs": 2, "fine_tune_learning_rate": 0.001,
        "encoder_learning_rate": 0.0001}}
    text = build_model_card(BundleConfig.from_dict(fine_tuned)).text
    assert "encoder (1.9 million weights), starting from weights learnt on ImageNet photos: a network" in text
    assert ("The decoder trained alone for 2 epochs, then everything at 0.001 "
            "(the encoder at 0.0001), the encoder's BatchNorm statistics kept.") in text
    one_rate = {**fine_tuned, "training": {**fine_tuned["training"], "encoder_learning_rate": 0.001}}
    assert "then everything at 0.001, the encoder's" in build_model_card(BundleConfig.from_dict(one_rate)).text
    recomputed = {**fine_tuned, "training": {**fine_tuned["training"], "batchnorm_statistics_recomputed": {
        "layers": 10, "frames": 367, "size": [432, 576], "split": "train"}}}
    assert ("statistics kept. After training, the statistics of its 10 trained BatchNorm layers were recomputed on "
            "the 367 training frames, un-augmented, at 432x576") in build_model_card(BundleConfig.from_dict(recomputed)).text
    assert "recomputed" not in text
    hed = {**CONFIG, "architecture": "vgg16-unet", "training": {**CONFIG["training"], "encoder_weights": "hed"}}
    assert "starting from HED's VGG16 weights" in build_model_card(BundleConfig.from_dict(hed)).text


def test_card_says_how_each_graph_computes_and_what_an_int8_one_measured():
    onnx_entry = {"runtime": "onnxruntime", "weights": "float16", "input_shape": None, "sha256": "a" * 64,
                  "bytes": 2**20, "max_difference_from_keras": 0.002}
    graphs = {"runtime": "LiteRT (XNNPACK), float16 weights, float32 arithmetic", "weights": "float16",
              "model_sha256": "0" * 64, "files": {
                  "graph_any_shape.tflite": {"input_shape": None, "sha256": "b" * 64, "bytes": 2**20,
                                             "max_difference_from_keras": 0.001},
                  "graph_any_shape.onnx": onnx_entry}}
    text = build_model_card(BundleConfig.from_dict({**CONFIG, "serving_graphs": graphs})).text
    assert "| `graph_any_shape.onnx` | ONNX Runtime (float16 weights, float32 arithmetic) |" in text
    assert "| `graph_any_shape.tflite` | LiteRT (float16 weights, float32 arithmetic) |" in text
    assert "measured through the int8 ONNX graph" not in text

    onnx_entry.update(weights="int8", activations="uint8", max_difference_from_keras=0.14)
    text = build_model_card(BundleConfig.from_dict({**CONFIG, "serving_graphs": graphs})).text
    assert "| `graph_any_shape.onnx` | ONNX Runtime (int8 weights and activations, statically quantised) |" in text
    assert "The figures above were measured through the int8 ONNX graph below, which is what the app serves" in text


def test_a_pedestrian_bundle_card_names_pedestrians_in_its_text_and_metadata_and_never_cars():
    config = BundleConfig.from_dict({**CONFIG, "target_class": {"id": 9, "name": "pedestrian"}})
    card = build_model_card(config)
    text = str(card)
    assert "# unet pedestrian segmentation (CamVid)" in text
    assert "Binary semantic segmentation of **pedestrians** in street photos" in text
    assert "a probability of being pedestrian" in text and "pedestrian-segmentation Gradio app" in text
    assert "`(batch, H, W, 1)` pedestrian probabilities; pedestrian where it is at least" in text
    assert "class 9 = pedestrian" in text and "vans and buses" not in text, "the car labels' caveat is the car's"
    data = card.data
    assert "pedestrian" in data.tags and "car" not in data.tags
    assert data.model_name == "unet pedestrian segmentation (CamVid)"
    assert {result.task_name for result in data.eval_results} == {"pedestrian segmentation"}
    assert {result.metric_name for result in data.eval_results} == {"pedestrian iou", "pedestrian dice",
                                                                  "pedestrian precision", "pedestrian recall"}
    # Only the car CamVid was filmed from is left.
    assert re.findall(r"\bcars?\b", text) == ["car", "car"]
    assert "filmed from a car driving" in text and "from a car's dashboard" in text


def test_a_bundle_of_own_data_never_claims_camvid_or_cambridge():
    config = BundleConfig.from_dict({**CONFIG, "target_class": {"id": 255, "name": "weed"},
                                     "dataset": {"name": "field-photos (images/ and masks/)"}})
    card = build_model_card(config)
    text = str(card)
    assert "CamVid" not in text and "Cambridge" not in text and "camvid" not in text.lower()
    assert "trained on field-photos (images/ and masks/): images with weed masks" in text
    assert "## Results on its validation frames (101 frames" in text
    assert "It knows only what field-photos (images/ and masks/) shows" in text
    assert "class 255" not in text
    data = card.data
    assert data.model_name == "unet weed segmentation (field-photos (images/ and masks/))"
    assert data.license == "other" and not data.datasets and "camvid" not in data.tags
    assert {result.dataset_type for result in data.eval_results} == {"field-photos-images-and-masks"}


def test_frames_converted_from_camvid_keep_its_description_and_say_binary_masks():
    config = BundleConfig.from_dict({**CONFIG, "target_class": {"id": 255, "name": "pedestrian"},
                                     "dataset": {"name": "CamVid pedestrians, drive 0006R0 held out"}})
    text = str(build_model_card(config))
    assert "filmed from a car driving through Cambridge (UK)" in text and "## Results on CamVid val" in text
    assert "its pedestrian pixels, as binary masks" in text and "class 255" not in text


def test_a_bundle_of_a_hub_dataset_links_the_dataset_repo():
    config = BundleConfig.from_dict({**CONFIG, "target_class": {"id": 255, "name": "weed"},
                                     "dataset": {"name": "someone/weeds", "hub_dataset": "someone/weeds",
                                                 "commit": "a" * 40}})
    data = build_model_card(config).data
    assert data.datasets == ["someone/weeds"]
    assert {result.dataset_type for result in data.eval_results} == {"someone/weeds"}
