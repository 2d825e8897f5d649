"""Serving: the model on raw images (Keras and SavedModel)."""
