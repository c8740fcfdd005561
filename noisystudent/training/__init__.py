"""The one training loop (``engine``) and what plugs into it: the tasks that turn a batch into a
loss (``tasks``), the losses they combine (``losses``), and the optimizer with its schedule
(``optim``). Nothing here knows which command runs it."""
