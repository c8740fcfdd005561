"""The models and what a model needs around it: building timm models with their weights
(``build``), the small-image families (``small_models``, ``airbench``), the input a model
expects (``transforms``), a finished run's model rebuilt and run over batches
(``inference``), and the training dtype ``precision: auto`` measures (``precision``)."""
