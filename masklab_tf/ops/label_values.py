"""Values with a fixed meaning in the dense label maps.

The data pipeline writes them (semantic and direction targets, padding), the
losses skip them and the pictures paint them; they live here, below all
three, and in plain Python, so that numpy-only code (visualize.py) can
import them without TensorFlow.
"""

# Pixels no loss reads: crowd regions, padding, and (direction labels)
# pixels outside every instance. A uint8 value, above every class and every
# direction channel (data/targets.py checks D x R stays below it).
IGNORE_LABEL = 255
