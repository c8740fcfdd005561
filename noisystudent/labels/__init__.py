"""The pseudo-labels as a teacher's labeling leaves them on disk, below every command that
writes or reads them: the store's part files, summary and soft labels (``store``), the
official selection rule (``selection``), the selected images rewritten as tar shards and the
student's stream over them (``selected_shards``), and the images to label next (``to_label``)."""
