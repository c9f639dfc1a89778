"""demo.temporal: each frame averaged with its neighbours, in order, none lost, memory bounded."""
import numpy as np
import pytest

from demo.temporal import (ExponentialSmoother, FlowExponentialSmoother, FlowHysteresisSmoother, HysteresisSmoother,
                           ProbabilitySmoother, push_frame, to_uint8)


def smooth_all(smoother, frames):
    out, held = [], 0
    for frame in frames:
        out += smoother.push(frame)
        held = max(held, len(smoother._frames))
    return out + smoother.flush(), held


def frames_of(values, shape=(2, 3)):
    return [np.full(shape, value, np.uint8) for value in values]


def test_a_window_of_one_passes_frames_through():
    frames = frames_of([0, 200, 7])
    out, held = smooth_all(ProbabilitySmoother(window=1), frames)
    assert [int(f[0, 0]) for f in out] == [0, 200, 7]
    assert held <= 1


def test_a_centred_window_averages_neighbours_and_shortens_at_the_ends():
    out, held = smooth_all(ProbabilitySmoother(window=3), frames_of([0, 30, 60, 90, 255]))
    # (0+30)/2, (0+30+60)/3, (30+60+90)/3, (60+90+255)/3, (90+255)/2, rounded
    assert [int(f[0, 0]) for f in out] == [15, 30, 60, 135, 173]
    assert held <= 3


def test_a_causal_window_uses_only_earlier_frames():
    smoother = ProbabilitySmoother(window=3, lookahead=0)
    assert [int(f[0, 0]) for f in smoother.push(np.full((1, 1), 90, np.uint8))] == [90]  # no delay
    out, _ = smooth_all(smoother, frames_of([0, 30], (1, 1)))
    assert [int(f[0, 0]) for f in out] == [45, 40]


def test_a_new_frame_size_starts_a_new_run():
    frames = frames_of([100, 100]) + frames_of([0, 0], shape=(4, 4))
    out, _ = smooth_all(ProbabilitySmoother(window=3), frames)
    assert [f.shape for f in out] == [(2, 3), (2, 3), (4, 4), (4, 4)]
    assert [int(f[0, 0]) for f in out] == [100, 100, 0, 0]


def test_a_window_below_one_is_refused():
    with pytest.raises(ValueError):
        ProbabilitySmoother(window=0)


def test_probabilities_are_kept_as_rounded_uint8():
    values = to_uint8(np.array([0.0, 0.5, 0.999, 1.0, 1.5, -0.2], np.float32))
    assert values.dtype == np.uint8 and values.tolist() == [0, 128, 255, 255, 255, 0]


def test_an_exponential_average_comes_out_at_once_and_forgets_a_finished_clip():
    smoother = ExponentialSmoother(weight=0.5)
    out = [int(f[0, 0]) for frame in frames_of([0, 100, 100]) for f in smoother.push(frame)]
    assert out == [0, 50, 75]
    assert smoother.flush() == []
    assert int(smoother.push(np.full((2, 3), 200, np.uint8))[0][0, 0]) == 200  # a new clip starts afresh
    assert int(smoother.push(np.full((4, 4), 10, np.uint8))[0][0, 0]) == 10  # so does a new frame size
    with pytest.raises(ValueError):
        ExponentialSmoother(weight=0)


def test_hysteresis_keeps_an_answer_until_the_probability_leaves_the_band():
    smoother = HysteresisSmoother(threshold=0.5, margin=0.1)  # the band: 102 to 153 of 255
    # 140 starts a clip (plain threshold); 110 and 150 stay in the band; 160 leaves it; 120 is kept "yes".
    values = [140, 110, 150, 100, 140, 160, 120, 101]
    out = [smoother.push(frame)[0] for frame in frames_of(values)]
    assert [bool(f[0, 0] >= 127.5) for f in out] == [True, True, True, False, False, True, True, False]
    assert [int(f[0, 0]) for f in out] == [140, 128, 150, 100, 127, 160, 128, 101]  # moved only across 127.5
    assert smoother.flush() == []
    assert int(smoother.push(np.full((2, 3), 110, np.uint8))[0][0, 0]) == 110  # a new clip starts afresh


def panning_clip(frames: int, step: int, probability: int, first: int | None = None):
    """A textured picture panning `step` pixels a frame to the left with a car block on it: the grey frames
    (so optical flow has something to follow), the uint8 probabilities (`probability` on the car, `first` on
    it in the first frame) and each frame's car mask."""
    import cv2

    height, width = 96, 128
    texture = cv2.GaussianBlur(np.random.default_rng(0).uniform(0, 255, (height, width + step * frames)), (0, 0), 2)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    car = np.zeros(texture.shape, bool)
    car[30:70, 60:100] = True
    greys, probabilities, cars = [], [], []
    for index in range(frames):
        window = np.s_[:, index * step:index * step + width]
        greys.append(np.ascontiguousarray(texture[window]))
        cars.append(car[window])
        value = first if index == 0 and first is not None else probability
        probabilities.append(np.where(car[window], value, 10).astype(np.uint8))
    return greys, probabilities, cars


def iou(mask, truth):
    return np.count_nonzero(mask & truth) / np.count_nonzero(mask | truth)


def test_a_flow_warped_average_follows_a_pan_where_a_plain_one_trails_it():
    greys, probabilities, cars = panning_clip(frames=8, step=4, probability=230)
    flow, plain = FlowExponentialSmoother(weight=0.3), ExponentialSmoother(weight=0.3)
    assert FlowExponentialSmoother.needs_frame and not getattr(ExponentialSmoother, "needs_frame", False)
    for grey, frame, car in zip(greys, probabilities, cars):
        followed = flow.push(frame, grey)[0] >= 128
        trailed = plain.push(frame)[0] >= 128
    # The plain average still answers "car" where the car was two or three frames ago: 8-12 pixels behind.
    assert iou(followed, car) > 0.95
    assert iou(trailed, car) < 0.85
    assert flow.flush() == []
    with pytest.raises(ValueError):
        flow.push(probabilities[0], greys[0][:10])  # the frame must be at the probabilities' resolution


def test_flow_warped_hysteresis_keeps_the_answer_of_the_moving_car_not_of_the_pixel():
    # The car is clearly a car in the first frame (200), then only in the band (110 < 127.5, within ±0.2).
    greys, probabilities, cars = panning_clip(frames=6, step=4, probability=110, first=200)
    flow, plain = FlowHysteresisSmoother(0.5, 0.2), HysteresisSmoother(0.5, 0.2)
    for grey, frame, car in zip(greys, probabilities, cars):
        followed = flow.push(frame, grey)[0] >= 128
        kept = plain.push(frame)[0] >= 128
    assert iou(followed, car) > 0.95
    # Without the flow each pixel keeps its own answer: the car shrinks to where it was in the first frame.
    assert iou(kept, car) < 0.7


def test_a_frame_the_network_skipped_gets_the_last_answer_carried_along_the_flow():
    greys, probabilities, cars = panning_clip(frames=6, step=4, probability=230)
    smoother = FlowExponentialSmoother(weight=0.5)
    assert smoother.shape is None
    smoother.push(probabilities[0], greys[0])
    assert smoother.shape == probabilities[0].shape
    for grey, car in zip(greys[1:], cars[1:]):
        carried = smoother.push(None, grey)[0] >= 128
        assert iou(carried, car) > 0.9
    # Five frames on the car is 20 pixels to the left: the answer went with it, with no new probabilities.
    assert iou(carried, cars[0]) < 0.5
    # push_frame takes the frame in colour at any size, and brings it to the answer's grey resolution.
    rgb = np.repeat(np.kron(greys[-1], np.ones((2, 2), np.uint8))[..., None], 3, axis=2)
    assert push_frame(smoother, None, rgb)[0].shape == probabilities[0].shape


def test_a_skipped_frame_needs_an_earlier_answer_and_a_smoother_that_follows_the_motion():
    greys, probabilities, _ = panning_clip(frames=2, step=4, probability=230)
    with pytest.raises(ValueError, match="earlier answer"):
        FlowExponentialSmoother().push(None, greys[0])
    with pytest.raises(ValueError, match="earlier answer"):
        push_frame(FlowExponentialSmoother(), None, greys[0])
    with pytest.raises(ValueError, match="follows the motion"):
        push_frame(ExponentialSmoother(), None, greys[0])
