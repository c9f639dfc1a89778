"""The Gradio app: upload a street photo, see the bundle's class in it (cars, as a rule), move the threshold.

The network runs once per new photo (upload, paste or webcam: the Image's `upload` event,
which fires once each time, where `change` fires twice when a photo replaces another and
also for values the app sets itself). The decoded photo and its probabilities (at the
network's resolution) are kept for the session, so moving the threshold, opacity or colour
only re-thresholds and redraws, which takes milliseconds. What all sessions keep shares one
byte budget (`demo.safeguards.KeptStore`); the examples' results are computed once, when
first shown, and kept for every session.

Uploads reach `demo.imaging.load_rgb` as the very file the user sent (EXIF
rotation, 16-bit depth and all): the network events take the raw upload
(`preprocess=False`) instead of letting Gradio open and convert it first, which
would also turn a broken file into an unreadable error instead of our message.
The raw upload's path is the client's word, so `demo.safeguards.uploaded_file`
checks it is one of the app's uploads before anything opens it.

The page is laid out in `demo.page` (`build_layout`), its events are handled by
`demo.handlers.PageHandlers`, and `wire_events` here connects the two.
"""
from __future__ import annotations

import logging
from typing import Callable

import gradio as gr

from demo.bundle import Bundle, onnx_graph_weights
from demo.clip_handlers import ClipHandlers, wire_clip_api
from demo.clip_page import ClipPageHandlers, PhotosFirst, build_clip_tab, wire_clip_events
from demo.engine import SegmentationEngine
from demo.handlers import PageHandlers
from demo.live import build_live_mode
from demo.page import PageComponents, build_layout, page_title
from demo.runtimes import describe_runtime
from demo.safeguards import KeptStore, limit_waiting_events_per_session, start_sweeping

logger = logging.getLogger(__name__)
# The most one upload may weigh (pass to launch(max_file_size=...)). Set by clips: a phone's minute of
# 1080p H.264 (what the video tab processes) is about 130 MB at 17 Mbit/s. A photo's own limit is its
# decoded pixels (demo/imaging.py), read from its header before anything is decoded.
MAX_UPLOAD_SIZE = "200mb"
# One network pass already spreads over every core: run passes one at a time.
NETWORK_CONCURRENCY = 1
# Slider moves cost milliseconds; let a few sessions redraw at once.
REDRAW_CONCURRENCY = 4
QUEUE_SIZE = 32
# One client may not fill the queue alone (a page waits on two or three requests at most).
MAX_WAITING_PER_SESSION = 4
# All sessions' photos and probabilities are freed, least recently used first, when together they keep
# more than this (about 3 bytes a pixel: 14 twelve-megapixel phone photos, or 900 street frames of
# 480x360), and each this long after its last network pass (demo.page.STATE_TIME_TO_LIVE_S).
MAX_KEPT_BYTES = 512 * 2**20
# Uploads and pictures unused this long are deleted, checked this often; the partial file
# of an aborted upload goes after this long without a byte written.
CACHE_MAX_AGE_S = 60 * 60
CACHE_SWEEP_INTERVAL_S = 10 * 60
PARTIAL_UPLOAD_IDLE_S = 10 * 60
# After a new result, bring it into view when it is not (on a phone it starts below the fold).
SHOW_RESULT_JS = """() => {
  const panel = document.getElementById("result-panel");
  const box = panel && panel.getBoundingClientRect();
  if (box && (box.top < 0 || box.bottom > window.innerHeight)) panel.scrollIntoView({behavior: "smooth", block: "start"});
}"""


def wire_events(page: PageComponents, handlers: PageHandlers) -> None:
    """Connect the page's events to their handlers, within the open gr.Blocks.

    The network writes only the state; the result is then drawn from the sliders' values at that
    moment, so it always matches them, even if one moved mid-pass. Private events are only left out
    of the API page: anyone can still call them, so they check their inputs as /segment does.
    """
    network = page.photo.upload(
        handlers.run_network, inputs=[page.photo, page.state], outputs=[page.state, page.photo],
        preprocess=False, concurrency_id="network", trigger_mode="always_last", show_progress_on=[page.result],
        api_name="run_network", api_visibility="private",
    )
    network.success(
        handlers.redraw, [page.state, *page.sliders], page.result_outputs, preprocess=False,
        concurrency_id="redraw", concurrency_limit=REDRAW_CONCURRENCY, show_progress="hidden",
        api_name="draw_new_photo", api_visibility="private",
    ).success(None, js=SHOW_RESULT_JS)
    network.failure(
        handlers.forget_photo, [page.state], [page.state, *page.result_outputs, page.photo],
        concurrency_id="redraw", show_progress="hidden", api_name="forget_photo", api_visibility="private",
    )

    page.examples.click(
        handlers.show_example, [page.examples, page.state, *page.sliders], [page.state, *page.result_outputs],
        preprocess=False, concurrency_id="redraw", show_progress_on=[page.result], api_name="show_example",
        api_visibility="private",
    ).success(None, js=SHOW_RESULT_JS)

    gr.on(
        [page.threshold.change, page.opacity.change, page.colour.change], handlers.redraw,
        inputs=[page.state, *page.sliders], outputs=page.result_outputs, preprocess=False,
        trigger_mode="always_last", concurrency_id="redraw", concurrency_limit=REDRAW_CONCURRENCY,
        show_progress="hidden", api_name="redraw", api_visibility="private",
    )

    # API only (no trigger in the page): (image, threshold) -> (drawn class, mask, stats), described for
    # the bundle's class (`PageHandlers.segment_description`).
    gr.on(
        [], handlers.segment, inputs=[page.photo, page.threshold],
        outputs=[page.drawn_output, page.mask, page.stats_output], preprocess=False,
        concurrency_id="network", api_name="segment", api_description=handlers.segment_description(),
    )


def plain_function(method: Callable[[str], None]) -> Callable[[str], None]:
    """`method` as a plain function. A gr.State's delete_callback sits in the page's config, which Gradio
    deep-copies on every page load: a bound method is copied with its object (every kept photo, the engine:
    a converted Keras model took the page 6-15 s), a function as itself."""
    def call(key: str) -> None:
        method(key)
    return call


def build_demo(bundle: Bundle, photos_first: bool = False) -> gr.Blocks:
    """The whole app for one loaded bundle, queued; launch it with max_file_size=MAX_UPLOAD_SIZE.
    `photos_first`: a clip pauses between frames while a photo's network pass runs (`PhotosFirst`). Off:
    on 2 busy cores it did not make a photo sent during a clip any quicker (`python -m bench.clip_contention`)."""
    engine = SegmentationEngine(bundle.model, bundle.config)
    engine.warm_up()  # at start, not on the first user's request
    logger.info("Serving %s with %s.", bundle.source,
                describe_runtime(engine.runtime, onnx_graph_weights(bundle.config)))

    kept = KeptStore(MAX_KEPT_BYTES)
    turns = PhotosFirst(engine) if photos_first else None
    handlers = PageHandlers(turns.photo_engine if turns else engine, bundle, kept)
    clip_engine = turns.clip_engine if turns else engine
    clip_page_handlers = ClipPageHandlers(clip_engine, bundle, turns)
    opening = handlers.opening(engine.default_threshold)  # the first example, drawn before anyone asks

    # No delete_cache: start_sweeping below cleans the upload folder instead.
    with gr.Blocks(title=page_title(bundle)) as demo:
        with gr.Tabs(elem_id="modes"):
            with gr.Tab("Photo", id="photo-tab", elem_id="photo-tab"):
                page = build_layout(bundle, engine.runtime, engine.default_threshold, opening,
                                    forget_state=plain_function(kept.discard))
            with gr.Tab("Video", id="video-tab", elem_id="video-tab"):
                clip_tab = build_clip_tab(bundle, engine.default_threshold,
                                          forget_clip=plain_function(clip_page_handlers.forget))
            with gr.Tab("Live camera", id="live-tab", elem_id="live-tab"):
                build_live_mode(engine, bundle, engine.default_threshold)  # builds and wires its own events
        wire_events(page, handlers)
        wire_clip_events(clip_tab, clip_page_handlers)
        wire_clip_api(ClipHandlers(clip_engine, handlers.words), engine.default_threshold)  # /segment_video

    demo.queue(default_concurrency_limit=NETWORK_CONCURRENCY, max_size=QUEUE_SIZE)
    limit_waiting_events_per_session(demo, MAX_WAITING_PER_SESSION)
    start_sweeping(demo, CACHE_SWEEP_INTERVAL_S, CACHE_MAX_AGE_S, PARTIAL_UPLOAD_IDLE_S)
    return demo
