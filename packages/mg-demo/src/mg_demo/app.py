"""The Gradio Blocks app: a form for one generation, the result with a download, and this session's gallery.

`build_app(generator)` makes the app for a pipeline; `mg_demo.serving.serve` runs it. Generation goes through Gradio's queue one request at a time (MindSpore work is not re-entrant), so
concurrent users wait their turn; requests the model cannot serve are refused before they queue.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import gradio as gr

from mg_demo.generation import IMAGE, MAX_CFG, MODES, VIDEO, Generator, RequestError, random_seed
from mg_demo.limits import DEFAULT_PER_CLIENT, ClientShare
from mg_demo.outputs import public_path
from mg_demo.serving import TITLE

log = logging.getLogger("mg_demo")

MAX_EXAMPLES = 12
HISTORY_KEYS = (
    "prompt",
    "negative_prompt",
    "mode",
    "frames",
    "height",
    "width",
    "steps",
    "cfg_scale",
    "seed",
    "reference",
)
# Which form field a refusal belongs to (the validator shows it there), by how RequestError messages begin.
FIELD_OF_MESSAGE = (
    ("the negative prompt", "negative_prompt"),
    ("mode", "mode"),
    ("frames", "frames"),
    ("a video needs", "frames"),
    ("height", "height"),
    ("width", "width"),
    ("steps", "steps"),
    ("cfg scale", "cfg_scale"),
    ("seed", "seed"),
    ("reference", "reference"),
)


def client_of(request: gr.Request | None) -> str:
    """The address a request came from: the unit of the per-client queue share ("local" for direct calls)."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "local"


def _describe(generator: Generator) -> str:
    info, lim = generator.info, generator.limits()
    height, width = info.size
    where = f"`{public_path(generator.checkpoint)}`" if generator.checkpoint else "a pipeline in memory"
    if generator.takes_reference:
        what = (
            "Personalised video (PT2V: the subject of the reference image, doing what the prompt says), text to "
            "video and text to image"
        )
    elif generator.takes_video:
        what = "Video editing (below), text to video and text to image"
    else:
        what = "Text to video and text to image"
    return (
        f"# {TITLE}\n"
        f"{what} with {where}: trained on {info.frames} frames at "
        f"{height}x{width}, {info.fps:g} fps. Sizes are multiples of {lim['multiple']} up to "
        f"{lim['max_height']}x{lim['max_width']}, up to {lim['max_frames']} frames, at most "
        f"{lim['max_tokens']} tokens per video (memory)."
    )


class DemoHandlers:
    """The app's event functions, kept apart from the layout so tests can call them directly."""

    def __init__(self, generator: Generator, share: ClientShare | None = None):
        self.generator = generator
        self.share = share or ClientShare(expire_after=generator.timeout)

    def admit(
        self,
        prompt,
        negative_prompt,
        mode,
        frames,
        height,
        width,
        steps,
        cfg_scale,
        seed,
        reference=None,
        history=None,
        request: gr.Request = None,
    ) -> list[dict[str, Any]]:
        """Gradio's validator for the queued generation: runs when a request asks to join the queue (browser or
        API), so a refused request never takes a slot. Checks the settings and the client's share of the queue;
        a refusal is shown on the field it concerns."""
        fields = [*HISTORY_KEYS, "history"]
        try:
            self.generator.request(
                prompt, negative_prompt, mode, frames, height, width, steps, cfg_scale, seed, reference
            )
            self.share.admit(client_of(request))
        except RequestError as err:
            message = str(err)
            field = next(
                (name for start, name in FIELD_OF_MESSAGE if message.lower().startswith(start)), "prompt"
            )
            return [gr.validate(name != field, message if name == field else "") for name in fields]
        return [gr.validate(True, "") for _ in fields]

    def check(
        self, prompt, negative_prompt, mode, frames, height, width, steps, cfg_scale, seed, reference=None
    ) -> None:
        """Refuse an impossible request at once, with the reason in the UI."""
        try:
            self.generator.request(
                prompt, negative_prompt, mode, frames, height, width, steps, cfg_scale, seed, reference
            )
        except RequestError as err:
            raise gr.Error(str(err), title="Cannot generate this", print_exception=False) from None

    def generate(
        self,
        prompt: str,
        negative_prompt: str,
        mode: str,
        frames: int,
        height: int,
        width: int,
        steps: int,
        cfg_scale: float,
        seed: int,
        reference: str | None = None,  # a default: API clients may leave it out (text-to-video calls)
        history: list[dict[str, Any]] | None = None,
        http_request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio finds the tracker by this default)
    ) -> tuple[Any, ...]:
        """Generate one video or image; returns (video, image, download, status, gallery, history). The
        output components' visibility follows the mode selector (`show_mode`)."""
        client = client_of(http_request)
        admitted = self.share.start(client)
        try:
            request = self.generator.request(
                prompt, negative_prompt, mode, frames, height, width, steps, cfg_scale, seed, reference
            )
            result = self.generator.generate(
                request, progress=lambda fraction, desc: progress(fraction, desc=desc), admitted=admitted
            )
        except RequestError as err:
            raise gr.Error(str(err), title="Cannot generate this", print_exception=False) from None
        except Exception as err:
            log.exception("generation failed")
            raise gr.Error(
                f"generation failed ({type(err).__name__}: {html.escape(str(err))}); the server log has the details",
                title="Generation failed",
                print_exception=False,
            ) from None
        finally:
            self.share.finish(client)
        entry = {"path": str(result.path), "caption": result.caption(), "settings": result.settings()}
        history = [entry, *(history or [])]
        is_image = request.mode == IMAGE
        path = str(result.path)
        return (
            None if is_image else path,
            path if is_image else None,
            path,
            f"**Done:** {html.escape(result.caption(), quote=False)}",
            [(item["path"], item["caption"]) for item in history],
            history,
        )

    def edit(
        self,
        video: str | None,
        instruction: str,
        task: str,
        steps: int,
        cfg_scale: float,
        seed: int,
        http_request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio finds the tracker by this default)
    ) -> tuple[Any, ...]:
        """Edit one video (Movie Gen Edit pipelines); returns (edited video, status)."""
        from mg_demo.editing import check_edit, run_edit

        client = client_of(http_request)
        admitted = self.share.start(client)
        try:
            request = check_edit(self.generator, video, instruction, task, steps, cfg_scale, seed)
            result = run_edit(
                self.generator, request, lambda fraction, desc: progress(fraction, desc=desc), admitted
            )
        except RequestError as err:
            raise gr.Error(str(err), title="Cannot edit this", print_exception=False) from None
        except Exception as err:
            log.exception("edit failed")
            raise gr.Error(
                f"edit failed ({type(err).__name__}: {html.escape(str(err))}); the server log has the details",
                title="Edit failed",
                print_exception=False,
            ) from None
        finally:
            self.share.finish(client)
        return str(result.path), f"**Done:** {html.escape(result.caption(), quote=False)}"

    @staticmethod
    def show_mode(mode: str) -> tuple[Any, ...]:
        """Image mode hides the frame count and shows the image output instead of the video."""
        is_image = mode == IMAGE
        return gr.update(visible=not is_image), gr.update(visible=not is_image), gr.update(visible=is_image)

    @staticmethod
    def reuse(history: list[dict[str, Any]] | None, evt: gr.SelectData) -> tuple[Any, ...]:
        """Clicking a gallery item puts its settings back into the form."""
        settings = (history or [])[evt.index]["settings"]
        frames = settings["frames"] if settings["mode"] == VIDEO else gr.update()
        values = {"reference": None, **settings, "frames": frames}
        return tuple(values[key] for key in HISTORY_KEYS)


def build_app(generator: Generator, max_per_client: int = DEFAULT_PER_CLIENT) -> gr.Blocks:
    """The demo for one pipeline. Run it with `mg_demo.serving.serve(app, ...)` (queue, one generation at a
    time, at most `max_per_client` requests of one client address waiting or running)."""
    info, lim, default = generator.info, generator.limits(), generator.defaults()
    handlers = DemoHandlers(generator, ClientShare(max_per_client, expire_after=generator.timeout))
    # Gradio keeps its own copy of every file it served: forget those on the output folder's schedule.
    keep_seconds = max(60, int(generator.keep_hours * 3600))
    with gr.Blocks(
        title=TITLE, analytics_enabled=False, delete_cache=(min(3600, keep_seconds), keep_seconds)
    ) as app:
        gr.Markdown(_describe(generator))
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Describe the video or image")
                negative = gr.Textbox(
                    label="Negative prompt", placeholder="What to steer away from (optional)"
                )
                mode = gr.Radio(list(MODES), value=VIDEO, label="Output")
                frames = gr.Number(
                    value=default.frames,
                    precision=0,
                    label="Frames",
                    info=f"2 to {lim['max_frames']}; the model was trained on {info.frames}",
                )
                with gr.Row():
                    height = gr.Number(
                        value=default.height,
                        precision=0,
                        label="Height",
                        info=f"multiple of {lim['multiple']}, up to {lim['max_height']}",
                    )
                    width = gr.Number(
                        value=default.width,
                        precision=0,
                        label="Width",
                        info=f"multiple of {lim['multiple']}, up to {lim['max_width']}",
                    )
                steps = gr.Slider(2, lim["max_steps"], value=default.steps, step=1, label="Sampling steps")
                cfg = gr.Slider(0, MAX_CFG, value=default.cfg_scale, step=0.5, label="CFG scale (1: off)")
                with gr.Row(equal_height=True):
                    seed = gr.Number(value=default.seed, precision=0, label="Seed", scale=3)
                    dice = gr.Button("Random seed", scale=1, elem_id="random-seed")
                reference = gr.Image(
                    label="Reference image",
                    type="filepath",
                    format="png",  # lossless: the model sees the uploaded pixels
                    sources=["upload"],
                    visible=generator.takes_reference,
                    height=160,
                    elem_id="reference",
                )
                run = gr.Button("Generate", variant="primary", elem_id="generate")
                if info.example_prompts:
                    gr.Examples(
                        [[text] for text in info.example_prompts[:MAX_EXAMPLES]],
                        inputs=[prompt],
                        label="Example prompts (training captions)",
                        cache_examples=False,
                    )
            with gr.Column(scale=1):
                video = gr.Video(
                    label="Video",
                    autoplay=True,
                    loop=True,
                    interactive=False,
                    height=400,
                    elem_id="video-output",
                )
                image = gr.Image(
                    label="Image",
                    type="filepath",
                    interactive=False,
                    visible=False,
                    height=400,
                    elem_id="image-output",
                )
                download = gr.File(label="Download", interactive=False)
                status = gr.Markdown(
                    "Ready: type a prompt and press Generate.", label="Status", elem_id="status"
                )
        gr.Markdown("Click a result to put its settings back into the form.")
        gallery = gr.Gallery(
            label="Results",
            columns=6,
            fit_columns=False,
            height=260,
            object_fit="contain",
            preview=False,
            elem_id="gallery",
        )
        history = gr.State([])

        form = [prompt, negative, mode, frames, height, width, steps, cfg, seed, reference]
        mode.change(handlers.show_mode, mode, [frames, video, image], queue=False, api_visibility="private")
        dice.click(random_seed, None, seed, queue=False, api_name="random_seed")
        # The check has no concurrency limit of its own, so a refused request never waits behind a generation.
        run.click(handlers.check, form, None, concurrency_limit=None, api_visibility="private").success(
            handlers.generate,
            [*form, history],
            [video, image, download, status, gallery, history],
            api_name="generate",
            validator=handlers.admit,
            concurrency_limit=1,
            concurrency_id="generate",
            show_progress_on=[video, image],
        )
        gallery.select(handlers.reuse, history, form, queue=False, api_visibility="private")
        if generator.takes_video:
            edit_section(generator, handlers)
    return app


def edit_section(generator: Generator, handlers: DemoHandlers) -> None:
    """The editing section of a Movie Gen Edit pipeline's page: an input video, an instruction and its task."""
    lim, default = generator.limits(), generator.defaults()
    tasks = list(generator.pipeline.editor.tasks[1:])
    gr.Markdown(
        "## Edit a video\nUpload a video the model can make (its frames and size: multiples of "
        f"{lim['multiple']} up to {lim['max_height']}x{lim['max_width']}), say what to change and pick the kind "
        "of edit."
    )
    with gr.Row():
        with gr.Column(scale=1):
            source = gr.Video(label="Input video", sources=["upload"], height=240, elem_id="edit-input")
            instruction = gr.Textbox(label="Instruction", placeholder="make the red circle blue")
            task = gr.Dropdown(tasks, value=tasks[0], label="Edit task")
            steps = gr.Slider(2, lim["max_steps"], value=default.steps, step=1, label="Edit sampling steps")
            cfg = gr.Slider(0, MAX_CFG, value=default.cfg_scale, step=0.5, label="Edit CFG scale")
            seed = gr.Number(value=0, precision=0, label="Edit seed")
            button = gr.Button("Edit", variant="primary", elem_id="edit")
        with gr.Column(scale=1):
            output = gr.Video(label="Edited video", interactive=False, height=240, elem_id="edit-output")
            status = gr.Markdown("", elem_id="edit-status")
    button.click(
        handlers.edit,
        [source, instruction, task, steps, cfg, seed],
        [output, status],
        api_name="edit",
        concurrency_limit=1,
        concurrency_id="generate",  # one MindSpore job at a time, generations and edits alike
        show_progress_on=[output],
    )
