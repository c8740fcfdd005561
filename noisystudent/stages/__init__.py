"""The commands' steps, each a function of the same name: ``train`` (a supervised teacher),
``distill``, ``pseudo_label`` (a clean teacher labels images), ``student`` (a noised student
on labeled and pseudo-labeled images), and ``selftrain``, the Noisy Student loop over them;
``stage`` is what every training stage starts from and ends with."""
