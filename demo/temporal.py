"""Steadier answers across a clip's frames: each frame's probabilities combined with earlier frames'.

A network that sees each frame alone flips pixels near its threshold from one frame to the next, and the
overlay flickers. The smoothers here take a frame's probabilities (uint8, 0-255, at the network's
resolution) and give them back combined with those of the frames around it. Clips and the live camera use
`shipped_smoother`: a running average that is first moved along the picture's optical flow
(`FlowExponentialSmoother`), so that it stays on a moving car instead of trailing it. The others
(`ProbabilitySmoother`'s windows, `ExponentialSmoother`, `HysteresisSmoother`) are what `bench.flicker`
compared it with. A smoother whose `needs_frame` is true also takes the frame (`push_frame` passes it).
"""
from __future__ import annotations

from collections import deque

import cv2
import numpy as np

# The share of each new frame in the running average of clips and the live camera, chosen with `python -m
# bench.flicker` (BENCHMARKS.md, section 9): warped along the flow, an average of weight 0.5 flickered 0.82x and
# 0.91x as much as frame by frame on pans at 2.2 and 6.6 pixels a frame, blinked a third and two thirds as
# often, and gained 0.003-0.006 of IoU, for about 3 ms a frame. Weight 0.2 read better still (0.74x, 0.88x),
# but then most of an answer is the warped past, and a car the flow follows badly (one moving on its own,
# which the bench's pans do not have) would carry its errors over more frames. No setting halved the flicker
# (issue #40's target): most of what is left is the network's edges a pixel off the truth's, moving with the car.
SMOOTHING_WEIGHT = 0.5


def shipped_smoother() -> "FlowExponentialSmoother":
    """A fresh smoother for one clip or one live stream: causal, no delay."""
    return FlowExponentialSmoother(SMOOTHING_WEIGHT)


def push_frame(smoother, probabilities: np.ndarray | None, rgb: np.ndarray) -> list[np.ndarray]:
    """`smoother.push` of a frame's uint8 probabilities, with the frame (any size, RGB) if it follows motion.
    `probabilities` None: the network skipped this frame; a flow-following smoother carries its last answer
    along the motion into it (`demo.video.network_stride`)."""
    if getattr(smoother, "needs_frame", False):
        shape = smoother.shape if probabilities is None else probabilities.shape
        # No shape: a skipped frame before any answer, which the smoother refuses with its own message.
        return smoother.push(probabilities, rgb if shape is None else grey_like(rgb, shape))
    if probabilities is None:
        raise ValueError("only a smoother that follows the motion can answer a frame the network skipped")
    return smoother.push(probabilities)


def grey_like(picture: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`picture` in grey at the (height, width) `shape` of the probabilities, as a flow-following smoother
    takes it."""
    if picture.ndim == 3:
        picture = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)
    height, width = shape
    if picture.shape != (height, width):
        picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)
    return picture


def to_uint8(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities (0-1 floats) as the smoothers keep them: 0-255, rounded; a quarter of float32's memory."""
    return np.clip(probabilities * 255.0 + 0.5, 0, 255).astype(np.uint8)


class ProbabilitySmoother:
    """Feed frames' probabilities in order with `push`; take each smoothed frame from what `push` and, at
    the end of the clip, `flush` return, in the same order. Frames of another shape start a new run."""

    def __init__(self, window: int = 1, lookahead: int | None = None):
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self.lookahead = (window - 1) // 2 if lookahead is None else min(lookahead, window - 1)
        self._frames: deque[np.ndarray] = deque()
        self._next = 0  # index in _frames of the next frame to come out

    def push(self, probabilities: np.ndarray) -> list[np.ndarray]:
        if self._frames and self._frames[-1].shape != probabilities.shape:
            out = self.flush()
        else:
            out = []
        self._frames.append(probabilities)
        while self._next < len(self._frames) and len(self._frames) - 1 - self._next >= self.lookahead:
            out.append(self._emit())
        return out

    def flush(self) -> list[np.ndarray]:
        """The frames still held back (the last `lookahead`), smoothed with what neighbours they have."""
        out = [self._emit() for _ in range(len(self._frames) - self._next)]
        self._frames.clear()
        self._next = 0
        return out

    def _emit(self) -> np.ndarray:
        behind = self.window - 1 - self.lookahead
        start, stop = max(0, self._next - behind), min(len(self._frames), self._next + self.lookahead + 1)
        frames = [self._frames[i] for i in range(start, stop)]
        self._next += 1
        # Forget what no later frame will average with.
        while self._next > behind:
            self._frames.popleft()
            self._next -= 1
        if len(frames) == 1:
            return frames[0]
        total = np.zeros(frames[0].shape, np.uint16)
        for frame in frames:
            total += frame
        return ((total + len(frames) // 2) // len(frames)).astype(np.uint8)


class ExponentialSmoother:
    """Causal like `ProbabilitySmoother(window, lookahead=0)`, same `push`/`flush`: each frame comes out at
    once, averaged with everything before it at weights falling by (1 - weight) per frame. Holds one
    float32 frame whatever the clip's length."""

    def __init__(self, weight: float = 0.5):
        if not 0 < weight <= 1:
            raise ValueError("weight must be in (0, 1]")
        self.weight = weight
        self._average: np.ndarray | None = None

    def push(self, probabilities: np.ndarray) -> list[np.ndarray]:
        if self._average is None or self._average.shape != probabilities.shape:
            self._average = probabilities.astype(np.float32)
        else:
            self._average += self.weight * (probabilities - self._average)
        return [(self._average + 0.5).astype(np.uint8)]

    def flush(self) -> list[np.ndarray]:
        self._average = None
        return []


class HysteresisSmoother:
    """Causal, no delay, no averaging (so no blur of moving cars): a pixel's answer changes only when its
    probability crosses the threshold by more than `margin`; inside that band it keeps its last answer.
    Same `push`/`flush`; what comes out is the uint8 probabilities with those in the band moved just to
    the side of `threshold` of the kept answer, so thresholding them at `threshold` gives it. For that
    one threshold: a slider move means running it again over the kept probabilities."""

    def __init__(self, threshold: float = 0.5, margin: float = 0.1):
        if margin < 0:
            raise ValueError("margin must not be negative")
        self.lowest_yes = int(np.ceil(threshold * 255))  # the least uint8 probability answered "yes"
        self.low, self.high = (threshold - margin) * 255, (threshold + margin) * 255
        self._answer: np.ndarray | None = None

    def push(self, probabilities: np.ndarray) -> list[np.ndarray]:
        answer = probabilities >= self.lowest_yes
        if self._answer is not None and self._answer.shape == probabilities.shape:
            in_band = (probabilities >= self.low) & (probabilities < self.high)
            answer = np.where(in_band, self._answer, answer)
        self._answer = answer
        out = probabilities.copy()
        out[answer & (probabilities < self.lowest_yes)] = self.lowest_yes
        out[~answer & (probabilities >= self.lowest_yes)] = self.lowest_yes - 1
        return [out]

    def flush(self) -> list[np.ndarray]:
        self._answer = None
        return []


class FlowWarp:
    """Dense optical flow (OpenCV's DIS) from each grey frame back to the one before it, to bring maps of the
    previous frame (probabilities, answers) into the current frame's pixels before they are combined with
    it. `scale` < 1 computes the flow on a smaller copy of the frames (cheaper; the flow is scaled back up)."""

    def __init__(self, scale: float = 0.5, preset: int = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST):
        if not 0 < scale <= 1:
            raise ValueError("scale must be in (0, 1]")
        self.scale = scale
        self._dis = cv2.DISOpticalFlow_create(preset)
        self._previous: np.ndarray | None = None  # the previous grey frame, at the flow's scale
        self._maps: tuple[np.ndarray, np.ndarray] | None = None
        self._inside: np.ndarray | None = None  # current pixels whose source lies inside the previous frame
        self._grid: tuple[np.ndarray, np.ndarray] | None = None  # each pixel's (x, y), kept for the frame size

    def reset(self) -> None:
        self._previous = self._maps = self._inside = None

    def step(self, grey: np.ndarray) -> bool:
        """Take the next frame (grey uint8, or RGB); True when there is a previous frame of the same size to
        warp from (then `warp` brings its maps here)."""
        if grey.ndim == 3:
            grey = cv2.cvtColor(grey, cv2.COLOR_RGB2GRAY)
        height, width = grey.shape
        small = grey if self.scale == 1 else cv2.resize(
            grey, (max(1, round(width * self.scale)), max(1, round(height * self.scale))), interpolation=cv2.INTER_AREA)
        previous, self._previous = self._previous, np.ascontiguousarray(small)
        if previous is None or previous.shape != small.shape:
            self._maps = self._inside = None
            return False
        # Backward flow: current pixel (x, y) shows what the previous frame had at (x, y) + flow.
        flow = self._dis.calc(self._previous, previous, None)
        if self.scale != 1:
            flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
            flow[..., 0] *= width / small.shape[1]
            flow[..., 1] *= height / small.shape[0]
        if self._grid is None or self._grid[0].shape != (height, width):
            self._grid = tuple(np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)))
        map_x, map_y = self._grid[0] + flow[..., 0], self._grid[1] + flow[..., 1]
        self._maps = (map_x, map_y)
        self._inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        return True

    def warp(self, previous: np.ndarray, current: np.ndarray | None = None,
             interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """`previous` (a map of the previous frame) in the current frame's pixels; where what a pixel shows
        was outside the previous frame, `current`'s value (None: the nearest edge of `previous`)."""
        warped = cv2.remap(previous, *self._maps, interpolation, borderMode=cv2.BORDER_REPLICATE)
        return warped if current is None else np.where(self._inside, warped, current)


class FlowExponentialSmoother:
    """`ExponentialSmoother` with the running average warped along the picture's optical flow before each
    frame joins it: a plain causal average shows where a moving car (or the whole picture, when the camera
    pans) was, and trails the motion (IoU lost on fast pans); warped first, the average stays on the car.
    Causal, no delay. `push(probabilities, frame)` also takes the frame, grey (or RGB) at the probabilities'
    resolution; `needs_frame` says so."""

    needs_frame = True

    def __init__(self, weight: float = 0.5, flow_scale: float = 0.5,
                 preset: int = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST):
        if not 0 < weight <= 1:
            raise ValueError("weight must be in (0, 1]")
        self.weight = weight
        self.flow = FlowWarp(flow_scale, preset)
        self._average: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int] | None:
        """(height, width) of the running average; None before the first frame."""
        return None if self._average is None else self._average.shape

    def push(self, probabilities: np.ndarray | None, frame: np.ndarray) -> list[np.ndarray]:
        """`probabilities` None (a frame the network skipped): the running average moved along the flow
        into this frame is its answer, with nothing new averaged in."""
        if probabilities is None:
            if self._average is None or frame.shape[:2] != self._average.shape:
                raise ValueError("a skipped frame needs an earlier answer of its size to carry over")
            if self.flow.step(frame):
                self._average = self.flow.warp(self._average)
            return [(self._average + 0.5).astype(np.uint8)]
        if frame.shape[:2] != probabilities.shape:
            raise ValueError("the frame must be at the probabilities' resolution")
        moved = self.flow.step(frame)
        current = probabilities.astype(np.float32)
        if self._average is None or self._average.shape != probabilities.shape or not moved:
            self._average = current
        else:
            warped = self.flow.warp(self._average, current)
            self._average = warped + self.weight * (current - warped)
        return [(self._average + 0.5).astype(np.uint8)]

    def flush(self) -> list[np.ndarray]:
        self._average = None
        self.flow.reset()
        return []


class FlowHysteresisSmoother:
    """`HysteresisSmoother` with the kept answer warped along the picture's optical flow first: a pixel in the
    band keeps the answer of the point of the scene it shows, not of the pixel it is (which, as the picture
    moves, showed something else). Same `push(probabilities, frame)` as `FlowExponentialSmoother`."""

    needs_frame = True

    def __init__(self, threshold: float = 0.5, margin: float = 0.1, flow_scale: float = 0.5,
                 preset: int = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST):
        self.hysteresis = HysteresisSmoother(threshold, margin)
        self.flow = FlowWarp(flow_scale, preset)

    def push(self, probabilities: np.ndarray, frame: np.ndarray) -> list[np.ndarray]:
        if frame.shape[:2] != probabilities.shape:
            raise ValueError("the frame must be at the probabilities' resolution")
        kept = self.hysteresis._answer
        if self.flow.step(frame) and kept is not None and kept.shape == probabilities.shape:
            answer = probabilities >= self.hysteresis.lowest_yes
            # Warped linearly and cut at a half: the kept answer's edge moves sub-pixel with the picture.
            warped = self.flow.warp(kept.astype(np.float32), answer.astype(np.float32))
            self.hysteresis._answer = warped >= 0.5
        return self.hysteresis.push(probabilities)

    def flush(self) -> list[np.ndarray]:
        self.flow.reset()
        return self.hysteresis.flush()
