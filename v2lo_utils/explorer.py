"""The interactive cognitive-map explorer (ipywidgets): scene, clip, question and frame count.

Changing the frame count shows that clip's question asked with that many frames: its sampled
frames, and the map with the objects the frames never show dotted.
"""

from __future__ import annotations

from .dataset import Dataset
from .figures import cogmap_figure, frames_figure, question_vectors


def fill_output(out, *figs) -> None:
    """Replace an ``ipywidgets.Output``'s content with plotly figures, set from the kernel.

    Setting ``outputs`` (one plotly mime bundle per figure) instead of capturing ``fig.show()``
    inside ``with out:`` keeps the kernel from routing display messages through the widget while
    a cell runs: headless runs (papermill/nbclient) hung on that capture beside a busy process.
    """
    import plotly.io as pio

    renderer = pio.renderers["plotly_mimetype"]
    out.outputs = tuple(
        {"output_type": "display_data", "data": renderer.to_mimebundle(f.to_dict()), "metadata": {}}
        for f in figs
    )


class Explorer:
    """Widgets over a dataset split; ``.widget`` is what a notebook displays."""

    def __init__(self, ds: Dataset, split: str = "train") -> None:
        import ipywidgets as w

        self.ds = ds
        rows = ds.rows.get(split) or ds.all_rows()
        if not rows:
            raise ValueError(f"{ds.root}: no rows to explore")
        self.index = {(r["scene_id"], r["clip_id"], r["task"], r["num_frames"]): r for r in rows}
        scenes = sorted({r["scene_id"] for r in rows})
        self.scene = w.Dropdown(options=scenes, description="scene")
        self.clip = w.Dropdown(description="clip")
        self.task = w.Dropdown(description="question")
        self.frames = w.ToggleButtons(description="frames", style={"button_width": "48px"})
        self.text = w.HTML()
        self.frames_out = w.Output()
        self.map_out = w.Output()
        self.widget = w.VBox(
            [
                w.HBox([self.scene, self.clip, self.task]),
                self.frames,
                self.text,
                self.frames_out,
                self.map_out,
            ]
        )
        self._busy = False
        self.scene.observe(lambda _: self._choices(), "value")
        for ctl in (self.clip, self.task, self.frames):
            ctl.observe(lambda _: self._choices(), "value")
        self._choices()

    def _keys(self, *prefix) -> list[tuple]:
        """Index keys (scene, clip, task, frames) that start with ``prefix``."""
        return [k for k in self.index if k[: len(prefix)] == prefix]

    def _choices(self) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            s = self.scene.value
            clips = sorted({k[1] for k in self._keys(s)})
            self.clip.options = clips
            if self.clip.value not in clips:
                self.clip.value = clips[0]
            tasks = sorted({k[2] for k in self._keys(s, self.clip.value)})
            self.task.options = tasks
            if self.task.value not in tasks:
                self.task.value = tasks[0]
            counts = sorted({k[3] for k in self._keys(s, self.clip.value, self.task.value)})
            self.frames.options = counts
            if self.frames.value not in counts:
                self.frames.value = counts[-1]
        finally:
            self._busy = False
        self.show(self.index[(s, self.clip.value, self.task.value, self.frames.value)])

    def show(self, row: dict) -> None:
        """Draw one row: question, frames, and the map with the question's vectors."""
        self.current = row
        self.text.value = (
            f"<b>{row['task']}</b> ({row['num_frames']} frames): {row['question']}<br>"
            f"{' &nbsp; '.join(row['options'])} &nbsp; <b>answer: {row['answer']}</b>"
        )
        fill_output(self.frames_out, frames_figure(self.ds.root, row["frames"]))
        fill_output(self.map_out, self.figure(row))

    def figure(self, row: dict):
        """The map figure of a row: every scene object (unseen ones dotted), cameras, vectors."""
        scene, hidden = self.ds.hidden_objects(row)
        clip = scene.clip(row["clip_id"])
        gt = scene.gt_map(clip)
        return cogmap_figure(
            gt,
            extent=tuple(row["map_extent"]),
            cameras=scene.cameras_in_map(clip, row["frame_indices"]),
            vectors=question_vectors(row["task"], row["params"], gt),
            hidden=hidden,
            title=f"{row['scene_id']} / {row['clip_id']}: ground-truth map, {row['num_frames']} frames",
        )


def prediction_figure(row: dict, completion: str):
    """The row's ground-truth map (the question's objects) with the completion's parsed map."""
    from .cogmap import CogMap, parse_response

    gt = CogMap.from_json(row["map"])
    pred = parse_response(completion).cogmap
    status = "parsed" if pred is not None else "no parseable map"
    return cogmap_figure(
        gt,
        pred=pred,
        extent=tuple(row["map_extent"]),
        vectors=question_vectors(row["task"], row["params"], gt),
        title=f"{row['id']}: ground truth (blue) vs prediction (red, {status})",
        height=420,
    )


class PredictionBrowser:
    """Pick an evaluated row: its frames, the completion, and the predicted map over the truth."""

    def __init__(self, root, rows: list[dict], completions: list[str]) -> None:
        import html

        import ipywidgets as w

        self.root, self.rows, self.completions = root, rows, completions
        self.pick = w.Dropdown(
            options=[(f"{r['id']} ({r['task']})", i) for i, r in enumerate(rows)], description="row"
        )
        self.text = w.HTML()
        self.out = w.Output()
        self.widget = w.VBox([self.pick, self.text, self.out])
        self._escape = html.escape
        self.pick.observe(lambda _: self.show(self.pick.value), "value")
        if rows:
            self.show(0)

    def show(self, i: int) -> None:
        row, completion = self.rows[i], self.completions[i]
        self.text.value = (
            f"<b>{self._escape(row['question'])}</b> answer {row['answer']}<br>"
            f"<pre style='white-space: pre-wrap'>{self._escape(completion)}</pre>"
        )
        fill_output(
            self.out, frames_figure(self.root, row["frames"]), prediction_figure(row, completion)
        )
