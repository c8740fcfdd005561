"""noisystudent: transfer learning, knowledge distillation and Noisy Student self-training."""

__version__ = "0.1.0"
