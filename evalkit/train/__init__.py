"""Training: the loop shared by pre-training and fine-tuning, big_vision's optimizers, pre-training runs, FLOPs."""
