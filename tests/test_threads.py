"""The thread chooser: it keeps the faster count idle and beside a busy process, notices when
conditions change, and pays one slow unit, not a window, for a hopeless probe."""

import pytest

from v2lo_utils.threads import ThreadChooser, timed


def drive(
    chooser: ThreadChooser, seconds_for, units: int, start: float = 0.0, kernel_for=None
) -> list[int]:
    """Run ``units`` units; ``seconds_for(threads, t)`` is a unit's time at wall time t. With
    ``kernel_for(threads)`` (the kernel's time on that count), the kernel check runs before each
    unit, as :func:`~v2lo_utils.threads.next_threads` runs it."""
    used, t = [], start
    for _ in range(units):
        if kernel_for is not None and (pair := chooser.needs_gate()) is not None:
            n, ref = pair
            chooser.gate(n, kernel_for(n) / kernel_for(ref), now=t)
        n = chooser.current()
        dt = seconds_for(n, t)
        t += dt
        chooser.record(dt, now=t)
        used.append(n)
    return used


def test_the_kernel_check_rules_out_two_threads_beside_a_busy_process_without_a_unit():
    busy = ThreadChooser((2, 1), recheck_s=5)
    used = drive(busy, lambda n, t: {2: 74.0, 1: 4.4}[n], 60, kernel_for={2: 0.064, 1: 0.0048}.get)
    assert busy.choice == 1 and 2 not in used  # not one 74 s unit on two threads
    assert busy.log[0]["gated"] and busy.log[0]["seconds_per_unit"]["2"] > 50
    assert len(busy.log) > 2  # rechecks still happen, each by the kernel alone
    idle = ThreadChooser((2, 1))  # kernel 2.8 times slower on two, as inside a notebook idle
    used = drive(
        idle, lambda n, t: {2: 0.40, 1: 0.55}[n], 40, kernel_for={2: 0.0134, 1: 0.0048}.get
    )
    assert idle.choice == 2 and used.count(2) > 30 and "gated" not in idle.log[0]
    # a count already measured in this probe, or none to compare with: no check
    fresh = ThreadChooser((2, 1), warmup=0, window=1)
    assert fresh.needs_gate() is None
    fresh.record(1.0)
    assert fresh.needs_gate() == (2, 1)
    fresh.gate(2, 2.8)  # under `gate_ratio` (idle in a training notebook): units decide
    assert fresh.current() == 2 and fresh.probing


def test_next_threads_times_the_kernel_only_when_a_count_is_first_tried(monkeypatch):
    import torch

    from v2lo_utils import threads

    calls = []
    two = iter([0.0048, 0.0048, 15.0])  # two threads stall in the third round only

    def fake_kernel(n, **_):
        calls.append(n)
        return next(two) if n == 2 else 0.0048

    monkeypatch.setattr(threads, "kernel_seconds", fake_kernel)
    before = torch.get_num_threads()
    ch = ThreadChooser((2, 1), warmup=0, window=2)
    try:
        for _ in range(4):
            with timed(ch):
                pass
        assert calls == [2, 1] * 3  # three rounds, once: when two threads were first due
        assert ch.choice == 1 and ch.log[0]["gated"] and torch.get_num_threads() == 1
        assert ch.summary()["gates"] == [{"unit": 2, "threads": 2, "kernel_ratio": 3125.0}]
    finally:
        torch.set_num_threads(before)


def test_kernel_seconds_runs_on_the_count_and_leaves_the_rng_alone():
    import torch

    from v2lo_utils.threads import kernel_seconds

    before = torch.get_num_threads()
    state = torch.random.get_rng_state()
    try:
        assert 0 < kernel_seconds(1, size=16, seconds=0.01) < 1.0  # s per product, one thread
        assert torch.get_num_threads() == 1
        assert torch.equal(state, torch.random.get_rng_state())
    finally:
        torch.set_num_threads(before)


def test_idle_keeps_two_threads_and_busy_keeps_one():
    idle = ThreadChooser((2, 1))
    used = drive(idle, lambda n, t: {2: 0.40, 1: 0.55}[n], 40)
    assert idle.choice == 2 and used[-20:] == [2] * 20
    busy = ThreadChooser((2, 1))
    used = drive(busy, lambda n, t: {2: 4.7, 1: 0.68}[n], 40)
    assert busy.choice == 1 and used[-20:] == [1] * 20
    # one thread is measured first; two threads are then tried for one unit only
    assert used.count(2) == 1
    assert busy.log[0]["seconds_per_unit"] == {"1": 0.68, "2": 4.7}


def test_a_competitor_that_starts_midway_moves_it_to_one_thread_and_back_when_it_ends():
    def speed(n, t):
        busy = 30 <= t < 200
        return {2: 4.7, 1: 0.68}[n] if busy else {2: 0.40, 1: 0.55}[n]

    ch = ThreadChooser((2, 1), recheck_s=20)
    t, trace = 0.0, []
    while t < 600:
        n = ch.current()
        dt = speed(n, t)
        t += dt
        ch.record(dt, now=t)
        trace.append((t, n))
    first_one = next(c for c in ch.log if c["threads"] == 1)
    assert first_one["why"] == "slower"  # noticed by the slowdown, not by the clock
    assert ch.choice == 2  # the competitor left; a recheck found two threads faster again
    late = [n for tt, n in trace if tt > 500]
    assert late.count(2) > 0.9 * len(late)
    # while busy, two threads ran for few units (the probes), not the whole span
    busy_two = sum(1 for tt, n in trace if 40 < tt < 200 and n == 2)
    assert busy_two <= 6


def test_rechecks_back_off_while_the_choice_holds():
    ch = ThreadChooser((2, 1), recheck_s=10, max_recheck_s=40)
    drive(ch, lambda n, t: {2: 0.5, 1: 0.7}[n], 600)
    gaps = [b["unit"] - a["unit"] for a, b in zip(ch.log, ch.log[1:], strict=False)]
    assert len(ch.log) >= 4 and all(c["threads"] == 2 for c in ch.log)
    assert gaps[1] > gaps[0] and gaps[-1] == gaps[-2]  # doubling, then capped


def test_warmup_units_are_not_measured_and_one_option_never_probes():
    ch = ThreadChooser((2, 1), warmup=3)
    for _ in range(3):
        ch.record(100.0)  # slow first steps must not decide anything
    assert ch.probing and not ch.log
    solo = ThreadChooser((1,))
    assert drive(solo, lambda n, t: 1.0, 10) == [1] * 10 and not solo.log
    with pytest.raises(ValueError, match="thread options"):
        ThreadChooser((0, 2))


def test_units_weigh_the_time():
    ch = ThreadChooser((2, 1), warmup=0, window=1)
    ch.record(10.0, units=100)  # 1 thread: 0.1 s per decode step
    ch.record(4.0, units=50)  # 2 threads: 0.08 s per step, though the batch took less time
    assert ch.choice == 2


def test_timed_sets_threads_and_records(monkeypatch):
    import torch

    before = torch.get_num_threads()
    ch = ThreadChooser((2, 1), warmup=0)
    try:
        with timed(ch, units=3):
            assert torch.get_num_threads() == 1  # fewest threads are measured first
        assert ch._times[1] and ch._times[1][0] >= 0
        with timed(None):  # no chooser: nothing changes
            pass
    finally:
        torch.set_num_threads(before)


def test_the_report_says_which_threads_a_stage_ran_on():
    from v2lo_utils.report import steps_sentence

    choices = [
        {"unit": 12, "why": "start", "threads": 2, "seconds_per_unit": {"2": 0.4, "1": 0.55}},
        {"unit": 80, "why": "recheck", "threads": 2, "seconds_per_unit": {"2": 0.41, "1": 0.5}},
        {"unit": 95, "why": "slower", "threads": 1, "seconds_per_unit": {"2": 4.7, "1": 0.7}},
    ]
    train = {"global_step": 500, "train_seconds": 600, "threads": {"choices": choices}}
    text = steps_sentence("SFT", train)
    assert "on 2, then 1 thread(s), chosen by timing" in text
    assert "1: 0.55, 2: 0.4; 3 probes)" in text
    choices[2]["gated"] = True
    text = steps_sentence("SFT", {**train, "threads": {"choices": choices}})
    assert "3 probes, 1 by the kernel check alone)" in text
    assert steps_sentence("SFT", {"global_step": 5, "train_seconds": 1}) == "SFT: 5 steps in 1 s."


def test_training_chooses_its_threads_and_gives_torch_back_its_count(
    tiny_workspace, tmp_path, monkeypatch
):
    import torch

    from v2lo_utils.sft import SFTParams, train_sft

    monkeypatch.setenv("V2LO_THREADS", "auto")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        p = SFTParams(
            data_dir=str(tiny_workspace / "data"),
            output_dir=str(tmp_path / "sft"),
            model_source="tiny",
            model_cache=str(tiny_workspace / "models"),
            max_frames=4,
            max_steps=14,
            batch_size=2,
            save_steps=1000,
        )
        result = train_sft(p)
        assert torch.get_num_threads() == 2  # restored, whatever was chosen
    finally:
        torch.set_num_threads(before)
    threads = result.threads
    assert threads["options"] == [2, 1] and threads["choices"]
    first = threads["choices"][0]
    assert first["why"] == "start" and set(first["seconds_per_unit"]) <= {"1", "2"}
    torch.set_num_threads(2)
    try:
        from v2lo_utils.threads import thread_chooser

        assert thread_chooser("cpu") is not None
        assert thread_chooser("cuda:0") is None  # no choice for work on a GPU
        monkeypatch.setenv("V2LO_THREADS", "fixed")
        assert thread_chooser("cpu") is None
    finally:
        torch.set_num_threads(before)


def test_generation_times_decode_steps_and_gives_torch_back_its_count(tiny_workspace, monkeypatch):
    import torch

    from v2lo_utils import generation
    from v2lo_utils.dataset import Dataset
    from v2lo_utils.models import load_model

    made = []
    real = generation.decode_step_clock

    def spy(chooser):
        made.append(chooser)
        return real(chooser)

    monkeypatch.setenv("V2LO_THREADS", "auto")
    monkeypatch.setattr(generation, "decode_step_clock", spy)
    ds = Dataset.load(tiny_workspace / "data")
    loaded = load_model(tiny_workspace / "models" / "tiny")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rows = ds.rows["train"][:2]
        greedy = generation.generate_completions(
            loaded.model, loaded.processor, rows, ds.root, max_new_tokens=20, batch_size=1
        )
        assert torch.get_num_threads() == 2
        sampled = generation.generate_completions(
            loaded.model, loaded.processor, rows, ds.root, 20, 1, temperature=1.0, samples=2
        )
    finally:
        torch.set_num_threads(before)
    assert len(greedy) == 2 and len(sampled) == 4
    # decode steps were timed: 2 warm-up steps, then one thread measured first
    assert made and made[0]._seen > 2 and made[0]._times[1]
