"""The loop's progress report: training steps/s and images/s leave evaluation time out."""
import logging

from contrastive_jax import writers


class _Clock:

  def __init__(self):
    self.now = 0.0

  def __call__(self) -> float:
    return self.now


class _Writer:

  def __init__(self):
    self.scalars = {}

  def write_scalars(self, step, scalars):
    self.scalars.setdefault(step, {}).update(scalars)


def test_rates_exclude_time_spent_in_evaluation(caplog):
  caplog.set_level(logging.INFO)
  clock, writer = _Clock(), _Writer()
  progress = writers.Progress(10, writer, every_steps=2, batch_size=32, clock=clock)
  progress(1)  # Starts the clock: the first step includes compilation.
  for step in range(2, 5):
    clock.now += 0.5  # Each training step takes half a second.
    progress(step)
    if step == 2:
      with progress.paused():  # An evaluator that runs for 10 s after step 2.
        clock.now += 10.0
  assert writer.scalars[2]["steps_per_sec"] == 2.0
  # Steps 3 and 4 took 11 s of wall-clock time, 1 s of it training.
  assert writer.scalars[4]["steps_per_sec"] == 2.0
  assert writer.scalars[4]["images_per_sec"] == 64.0
  assert 3 not in writer.scalars
  assert "2.0 steps/s, 64 images/s, 40.0% (4/10), ETA: 0m33s" in caplog.text  # 6 x 11 s / 2.


def test_the_last_step_reports_and_no_batch_size_means_no_image_rate():
  clock, writer = _Clock(), _Writer()
  progress = writers.Progress(5, writer, every_steps=4, clock=clock)
  for step in range(1, 6):
    clock.now += 1.0
    progress(step)
  assert sorted(writer.scalars) == [4, 5]
  assert writer.scalars[5]["steps_per_sec"] == 1.0
  assert "images_per_sec" not in writer.scalars[5]
