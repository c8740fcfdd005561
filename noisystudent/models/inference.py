"""Inference: a model run over batches of images, in eval mode, a batch of logits at a time
(evaluation, prediction, teaching and pseudo-labeling; a finished run's model comes from
``saved.load_trained``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from tqdm.auto import tqdm

from noisystudent.core.device import autocast, release_free_heap


def predict_logits(model: torch.nn.Module, pipeline: Callable, loader: Iterable[dict], *,
                   device: torch.device, dtype: torch.dtype | None, progress: bool = False,
                   description: str = "predict", flip: bool = False) -> torch.Tensor:
    """fp32 logits on the CPU for every batch of the loader, model in eval mode."""
    chunks = [logits for _, logits in iter_logits(model, pipeline, loader, device=device,
                                                  dtype=dtype, progress=progress,
                                                  description=description, flip=flip)]
    return torch.cat(chunks) if chunks else torch.empty(0)


def iter_logits(model: torch.nn.Module, pipeline: Callable, loader: Iterable[dict], *,
                device: torch.device, dtype: torch.dtype | None, progress: bool = False,
                description: str = "predict", flip: bool = False
                ) -> Iterator[tuple[dict, torch.Tensor]]:
    """(batch, its fp32 logits on the CPU) for every batch of the loader, model in eval mode:
    a caller that reduces each batch holds one batch of logits, whatever the set's size.
    ``flip``: the mean of the logits of each image and its mirror (flip test-time
    augmentation), unless the model already averages them itself (airbench's ``flip_tta``)."""
    flip = flip and not getattr(model, "flip_tta", False)
    was_training = model.training
    model.eval()
    try:
        for step, batch in enumerate(tqdm(loader, desc=description, leave=False,
                                          disable=not progress)):
            with torch.no_grad(), autocast(device, dtype):
                x = pipeline(batch["images"])
                logits = model(x).float()
                if flip:
                    logits = (logits + model(x.flip(3)).float()) / 2
                logits = logits.cpu()
            yield batch, logits
            if step % 50 == 49:
                release_free_heap()
    finally:
        model.train(was_training)
