"""The interactive cognitive-map explorer (ipywidgets): scene, clip, question and frame count.

Changing the frame count shows that clip's question asked with that many frames: its sampled
frames, and the map with the objects the frames never show dotted.
"""

from __future__ import annotations

from .dataset import Dataset
from .figures import cogmap_figure, frames_figure, question_vectors


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
        self.frames_out.clear_output(wait=True)
        with self.frames_out:
            frames_figure(self.ds.root, row["frames"]).show()
        self.map_out.clear_output(wait=True)
        with self.map_out:
            self.figure(row).show()

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
