"""The training engine that the command line and the widgets both drive: run folders, the
JSON-line event/control protocol and the training child process. No Qt; importing any module
here imports no torch (the functions that train import it when called).

- :mod:`.runs` — run folders: the data, settings and record of a training, its metrics and
  checkpoints; a Trainer for a run folder as written.
- :mod:`.events` — training events as JSON objects, one line each (``--events``), and the
  terminal ``error`` event of a failure or a crash.
- :mod:`.session` — what ``napari-unet train --events - --control -`` runs: the event stream,
  the stdin control lines (pause, resume, stop, checkpoint, preview), a terminal event last.
- :mod:`.preview` — the live preview a training child computes on request.
- :mod:`.process` — :class:`~napari_unet.engine.process.TrainingProcess`: a
  ``napari-unet train`` child and its event stream, read without blocking.
- :mod:`.child` — how the Train widget launches and ends its child (lower priority, stdin
  closed, then SIGTERM, then SIGKILL: never an orphan).
"""
