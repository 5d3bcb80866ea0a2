"""What a model's input tensor holds, shared by the code that feeds models and the code that loads weights.

Grey images arrive as ``(x / 255 - GREY_MEAN) / GREY_STD``: ImageNet's grey-level
statistics (the mean of its RGB means and stds), so ImageNet weights whose first conv is
summed to one channel see inputs on the scale they expect. Weights trained on another
scale (torchxrayvision's [-1024, 1024]) fold the difference into their first layers when
loaded, which needs these numbers here, below the training layer that applies them.
"""
GREY_MEAN = 0.449
GREY_STD = 0.226
